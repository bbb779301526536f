"""The model registry: register the best candidate as ``challenger``, promote, lineage, list.

Registered model ``taxi-duration``; aliases ``champion``, ``challenger``, ``previous``.
Registration is all or nothing: if any step after the version is created fails (description,
tags, alias), the version is deleted again and :class:`RegistrationError` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taxi_common.errors import BadInputError, WorkbookError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

MODEL_NAME = "taxi-duration"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
#: Run tags copied onto each registered version: where it came from.
LINEAGE_TAGS = ("data.source", "data.color", "data.train_months", "data.val_month",
                "data.train_rows", "data.val_rows", "data.train_fingerprint",
                "data.val_fingerprint", "data.seed", "data.scenario", "code.version", "model.name")


class RegistrationError(WorkbookError):
    """A model version that could not be registered completely (and was removed again)."""


@dataclass(frozen=True)
class Lineage:
    """Where a registered version came from."""

    version: str
    run_id: str
    aliases: list[str]
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    description: str = ""
    source: str = ""

    def lines(self) -> list[str]:
        """The lineage as ``key: value`` lines for a terminal."""
        out = [f"model: {MODEL_NAME} version {self.version}",
               f"aliases: {', '.join(self.aliases) or '-'}",
               f"run id: {self.run_id}", f"model uri: {self.source}"]
        out += [f"{k}: {v}" for k, v in sorted(self.tags.items())]
        out += [f"param {k}: {v}" for k, v in sorted(self.params.items())]
        out += [f"metric {k}: {v:.4f}" for k, v in sorted(self.metrics.items())]
        if self.description:
            out.append(f"description: {self.description}")
        return out


def client_for(tracking_uri: str) -> MlflowClient:
    """A client whose tracking and registry URIs are ``tracking_uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="NYC taxi trip duration (minutes) from pickup zone, drop-off "
                "zone and distance; trained by the level-3 pipeline.")
        except MlflowException:
            client.get_registered_model(name)  # created meanwhile by another process


def register_version(client: MlflowClient, model_id: str, run_id: str, *, description: str,
                     tags: dict[str, str], alias: str = CHALLENGER,
                     name: str = MODEL_NAME) -> ModelVersion:
    """Register the logged model ``model_id`` as a new version of ``name`` with ``alias``, tags
    and description.

    Through ``client`` only: the version's source is the logged model's artifact location, the
    place MLflow itself resolves ``models:/<model_id>`` to (through its global tracking URI).
    All or nothing: on failure after the version exists, delete it and raise
    :class:`RegistrationError`.
    """
    try:
        _ensure_registered_model(client, name)
        source = client.get_logged_model(model_id).artifact_location
        version = client.create_model_version(name, source, run_id=run_id,
                                              description=description, model_id=model_id)
    except Exception as exc:  # noqa: BLE001 - any failure is reported in one line
        raise RegistrationError(
            f"could not register models:/{model_id} as {name}: {_line(exc)}") from exc
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version.version), key, value)
        client.set_registered_model_alias(name, alias, str(version.version))
    except Exception as exc:  # noqa: BLE001
        _delete_quietly(client, name, str(version.version))
        raise RegistrationError(
            f"registering {name} version {version.version} failed ({_line(exc)}); the version "
            "was deleted again, nothing is half-registered"
        ) from exc
    return client.get_model_version(name, str(version.version))


def _line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


def _delete_quietly(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.delete_model_version(name, version)
    except Exception:  # noqa: BLE001, S110 - already gone is fine
        pass


def get_version(client: MlflowClient, version: str, name: str = MODEL_NAME) -> ModelVersion:
    """Version ``version`` of ``name``; a one-line error when it does not exist."""
    from mlflow.exceptions import MlflowException

    if not str(version).isdigit():
        raise BadInputError(f"model version {version!r} is not a number (for example 3)")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise BadInputError(
            f"{name} has no version {version}: list them with `mlops-levels level3 models`"
        ) from None


def alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, version: str, name: str = MODEL_NAME) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the old champion becomes ``previous``.

    A ``challenger`` alias on the promoted version is removed (it is the champion now).
    Returns ``{"champion": new, "previous": old or None}``.
    """
    target = str(get_version(client, version, name).version)
    old = alias_version(client, CHAMPION, name)
    if old == target:
        return {CHAMPION: target, PREVIOUS: alias_version(client, PREVIOUS, name)}
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, target)
    if alias_version(client, CHALLENGER, name) == target:
        client.delete_registered_model_alias(name, CHALLENGER)
    return {CHAMPION: target, PREVIOUS: old}


def lineage(client: MlflowClient, version: str, name: str = MODEL_NAME) -> Lineage:
    """Where a version came from: data, months, rows, fingerprints, params, metrics, code, run."""
    mv = get_version(client, version, name)
    run = client.get_run(mv.run_id) if mv.run_id else None
    tags = {k: v for k, v in (mv.tags or {}).items()}
    if run is not None:
        for key in LINEAGE_TAGS:
            if key in run.data.tags:
                tags.setdefault(key, run.data.tags[key])
    return Lineage(version=str(mv.version), run_id=mv.run_id or "", aliases=list(mv.aliases or []),
                   tags=tags, params=dict(run.data.params) if run else {},
                   metrics=dict(run.data.metrics) if run else {},
                   description=mv.description or "", source=mv.source or "")


def list_versions(client: MlflowClient, name: str = MODEL_NAME) -> list[dict[str, Any]]:
    """Every version, newest first: version, aliases, model, val RMSE, run id."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags or {}
        rows.append({"version": str(mv.version),
                     "aliases": sorted(by_version.get(str(mv.version), [])),
                     "model": tags.get("model.name", ""),
                     "val_rmse": float(tags["val_rmse"]) if "val_rmse" in tags else None,
                     "run_id": mv.run_id})
    return rows
