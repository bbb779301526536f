"""The model registry: register the best candidate as ``challenger``, promote, roll back, load a
pinned version, lineage, list.

Registered model ``taxi-duration``; aliases ``champion``, ``challenger``, ``previous``.

- Registration is all or nothing: if any step after the version is created fails (description,
  tags, alias), the version is deleted again and :class:`RegistrationError` says why.
- Only MLflow's "does not exist" means "no such model, version or alias". Any other failure (a
  tracking server that is down or answers 5xx, a locked store) is a :class:`RegistryError` in one
  line, raised before anything is written: an outage never reads as "there is no champion".
- :func:`promote` and :func:`rollback` write audit tags (``promotion.*``) on the version that
  becomes champion: when, why, by whom, and which version it replaced.
- :func:`rollback` is one undo of the last promotion: ``champion`` <- ``previous``, and
  ``previous`` is cleared, so a second rollback is refused instead of swapping back and forth.
"""

from __future__ import annotations

import getpass
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from taxi_common.errors import BadInputError, WorkbookError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.exceptions import MlflowException
    from sklearn.pipeline import Pipeline

MODEL_NAME = "taxi-duration"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
#: Run tags copied onto each registered version: where it came from.
LINEAGE_TAGS = ("data.source", "data.color", "data.train_months", "data.val_month",
                "data.train_rows", "data.val_rows", "data.train_fingerprint",
                "data.val_fingerprint", "data.seed", "data.scenario", "code.version", "model.name")


#: Audit tags written on the version that becomes champion (by promote and by rollback).
ACTION_TAG, PROMOTED_AT_TAG, REASON_TAG, ACTOR_TAG, REPLACED_TAG = (
    "promotion.action", "promotion.promoted_at", "promotion.reason", "promotion.actor",
    "promotion.replaced")
#: Audit tags written on the champion that a rollback removes.
ROLLED_BACK_AT_TAG, ROLLED_BACK_REASON_TAG, ROLLED_BACK_BY_TAG = (
    "promotion.rolled_back_at", "promotion.rolled_back_reason", "promotion.rolled_back_by")
NO_REASON = "(none given)"
#: What MLflow accepts as an alias name.
_ALIAS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class RegistrationError(WorkbookError):
    """A model version that could not be registered completely (and was removed again)."""


class RegistryError(WorkbookError):
    """A registry call that failed for another reason than a missing model, version or alias:
    the tracking server is down or answers with an error, the store is locked."""


class RollbackError(WorkbookError):
    """A rollback that cannot be done: there is no ``previous`` version to go back to."""


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


def is_missing(exc: MlflowException) -> bool:
    """True when MLflow says that a model, version or alias does not exist, and only then.

    Measured with MLflow 3.17, the same on a SQLite store and through ``mlflow server``: a missing
    model or version is ``RESOURCE_DOES_NOT_EXIST``; a missing alias of an existing model is
    ``INVALID_PARAMETER_VALUE`` "Registered model alias … not found." (the same code also means a
    malformed name, hence the message check). An unreachable server is ``INTERNAL_ERROR``.
    """
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    text = str(getattr(exc, "message", "") or exc).lower()
    return code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text


def _registry_error(client: MlflowClient, doing: str, exc: BaseException,
                    consequence: str = "nothing was changed") -> RegistryError:
    """One line: what failed, where, MLflow's reason, and what that means for the registry."""
    return RegistryError(f"{doing}: the registry at {_where(client)} failed ({_line(exc)}); "
                         f"{consequence}")


def _where(client: MlflowClient) -> str:
    """The client's tracking (and registry) URI, without a password if one is in it."""
    uri = str(client.tracking_uri)
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists; an outage is not read as "it does not"."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not is_missing(exc):
            raise
    try:
        client.create_registered_model(
            name, description="NYC taxi trip duration (minutes) from pickup zone, drop-off "
            "zone and distance; trained by the level-3 pipeline.")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise  # RESOURCE_ALREADY_EXISTS: created meanwhile by another process


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
    """Version ``version`` of ``name``; a one-line error when it does not exist.

    :class:`BadInputError` when MLflow says it does not exist, :class:`RegistryError` when the
    registry cannot tell.
    """
    from mlflow.exceptions import MlflowException

    if not str(version).isdigit():
        raise BadInputError(f"model version {version!r} is not a number (for example 3)")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not is_missing(exc):
            raise _registry_error(client, f"reading {name} version {version}", exc) from exc
        raise BadInputError(
            f"{name} has no version {version}: list them with `mlops-levels level3 models`"
        ) from None


def alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> str | None:
    """The version an alias points at; None when the alias (or the model) does not exist.

    One small request (plus MLflow's own check of the name): what levels 4 and 5 poll. Any other
    failure is a :class:`RegistryError`, never None.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise _registry_error(client, f"reading @{alias} of {name}", exc) from exc


def aliases(client: MlflowClient, name: str = MODEL_NAME) -> dict[str, str]:
    """Every alias of ``name`` and its version, read in one request (``{}`` without the model)."""
    model = _registered_model(client, name)
    return {} if model is None else _alias_map(model)


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    """The registered model, None when it does not exist; a :class:`RegistryError` otherwise."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise _registry_error(client, f"reading {name} and its aliases", exc) from exc


def _alias_map(model: RegisteredModel) -> dict[str, str]:
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def default_actor() -> str:
    """Who acts when nobody says: the OS user name, or ``cli`` when there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no USER and no passwd entry (some containers)
        return "cli"


def _now() -> str:
    """The current UTC time, ISO 8601 to the second: ``2021-03-01T12:00:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _move_aliases(client: MlflowClient, name: str, moves: Mapping[str, str | None],
                  before: Mapping[str, str], doing: str) -> None:
    """Point each alias of ``moves`` at its version, in order (None: delete the alias).

    When a move fails, the aliases already moved are put back as in ``before`` (the state read
    just before), then :class:`RegistryError` says whether that worked.
    """
    from mlflow.exceptions import MlflowException

    done: list[str] = []
    try:
        for alias, version in moves.items():
            _set_alias(client, name, alias, version)
            done.append(alias)
    except MlflowException as exc:
        try:
            for alias in reversed(done):
                _set_alias(client, name, alias, before.get(alias))
        except MlflowException:
            state = ", ".join(f"@{a} -> {before.get(a) or 'none'}" for a in moves)
            raise _registry_error(client, doing, exc, f"the aliases may be half-moved: they "
                                  f"were {state}; check `mlops-levels level3 models`") from exc
        raise _registry_error(client, doing, exc) from exc


def _set_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)


def _write_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, str],
                doing: str) -> None:
    """Set tags on a version; a failure says that the aliases did move."""
    from mlflow.exceptions import MlflowException

    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    except MlflowException as exc:
        raise _registry_error(client, doing, exc, "the aliases did move, but the audit tags "
                              f"of version {version} are incomplete") from exc


def _audit(action: str, replaced: str | None, reason: str, actor: str | None) -> dict[str, str]:
    """The audit tags of the version that becomes champion."""
    return {ACTION_TAG: action, PROMOTED_AT_TAG: _now(), REASON_TAG: reason.strip() or NO_REASON,
            ACTOR_TAG: actor or default_actor(), REPLACED_TAG: replaced or "none"}


def promote(client: MlflowClient, version: str, name: str = MODEL_NAME, *, reason: str = "",
            actor: str | None = None) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the old champion becomes ``previous``.

    A ``challenger`` alias on the promoted version is removed (it is the champion now). The
    promoted version gets the audit tags (:data:`PROMOTED_AT_TAG`, :data:`REASON_TAG`,
    :data:`ACTOR_TAG` (default :func:`default_actor`), :data:`REPLACED_TAG`, action
    ``promote``). Promoting the champion again changes nothing. Everything is read before
    anything is written: a registry that fails to answer leaves every alias as it was.
    Returns ``{"champion": new, "previous": old or None}``.
    """
    target = str(get_version(client, version, name).version)
    before = aliases(client, name)
    old = before.get(CHAMPION)
    if old == target:
        return {CHAMPION: target, PREVIOUS: before.get(PREVIOUS)}
    moves: dict[str, str | None] = {PREVIOUS: old} if old else {}
    moves[CHAMPION] = target
    if before.get(CHALLENGER) == target:
        moves[CHALLENGER] = None
    doing = f"promoting {name} version {target}"
    _move_aliases(client, name, moves, before, doing)
    _write_tags(client, name, target, _audit("promote", old, reason, actor), doing)
    return {CHAMPION: target, PREVIOUS: old}


def rollback(client: MlflowClient, *, reason: str = "", actor: str | None = None,
             name: str = MODEL_NAME) -> dict[str, str | None]:
    """Undo the last promotion: ``champion`` <- ``previous``, and ``previous`` is cleared.

    The restored champion gets the audit tags (action ``rollback``, replaced: the rolled-back
    version); the rolled-back version gets :data:`ROLLED_BACK_AT_TAG`,
    :data:`ROLLED_BACK_REASON_TAG` and :data:`ROLLED_BACK_BY_TAG`. Clearing ``previous`` is the
    choice that keeps a second rollback from silently swapping the two versions back: it raises
    :class:`RollbackError` until a version is promoted again. Returns
    ``{"champion": restored, "previous": None, "rolled_back": the version it replaced or None}``.
    """
    before = aliases(client, name)
    restored, rolled_back = before.get(PREVIOUS), before.get(CHAMPION)
    if restored is None or restored == rolled_back:
        raise RollbackError(_no_previous(client, name, rolled_back))
    doing = f"rolling {name} back to version {restored}"
    _move_aliases(client, name, {CHAMPION: restored, PREVIOUS: None}, before, doing)
    who, why = actor or default_actor(), reason.strip() or NO_REASON
    _write_tags(client, name, restored, _audit("rollback", rolled_back, why, who), doing)
    if rolled_back is not None:
        _write_tags(client, name, rolled_back, {ROLLED_BACK_AT_TAG: _now(),
                                                ROLLED_BACK_REASON_TAG: why,
                                                ROLLED_BACK_BY_TAG: who}, doing)
    return {CHAMPION: restored, PREVIOUS: None, "rolled_back": rolled_back}


def _no_previous(client: MlflowClient, name: str, champion: str | None) -> str:
    """Why there is nothing to roll back to, and what to do instead."""
    fix = "promote a version by number: `mlops-levels level3 promote VERSION`"
    if champion is None:
        return f"{name} has no @champion and no @previous: nothing to roll back; {fix}"
    tags = get_version(client, champion, name).tags or {}
    if tags.get(ACTION_TAG) == "rollback":
        return (f"{name} has no @previous: version {champion} is @champion because of a rollback "
                f"at {tags.get(PROMOTED_AT_TAG, '?')}, and one rollback undoes one promotion; "
                f"{fix}")
    return f"{name} has no @previous (version {champion} was the first champion); {fix}"


def resolve_version(client: MlflowClient, alias_or_version: str,
                    name: str = MODEL_NAME) -> str:
    """The version number that ``3``, ``champion`` or ``@champion`` means right now."""
    wanted = str(alias_or_version).strip().removeprefix("@")
    if wanted.isdigit():
        return str(get_version(client, wanted, name).version)
    if not _ALIAS_NAME.match(wanted):
        raise BadInputError(f"{alias_or_version!r} is neither a version number nor an alias "
                            "(for example 3 or champion)")
    version = alias_version(client, wanted, name)
    if version is None:
        raise BadInputError(f"{name} has no @{wanted} alias: see `mlops-levels level3 models`"
                            + ("; promote a version first" if wanted == CHAMPION else ""))
    return version


def load_version(client: MlflowClient, alias_or_version: str,
                 name: str = MODEL_NAME) -> tuple[str, Pipeline]:
    """``(version, pipeline)``: the native scikit-learn pipeline of one pinned version.

    An alias is resolved to a version number once; then that version's files are downloaded
    through ``client``'s own URIs (MLflow's global tracking URI is neither read nor set), so a
    ``champion`` that moves meanwhile cannot give the files of another version than the number
    returned.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    version = resolve_version(client, alias_or_version, name)
    doing = f"loading {name} version {version}"
    try:
        location = client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="taxi-model-") as folder:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=folder, tracking_uri=client.tracking_uri)
            pipeline = mlflow.sklearn.load_model(local)
    except (MlflowException, OSError) as exc:
        raise _registry_error(client, doing, exc, "no model was loaded") from exc
    return version, pipeline


def lineage(client: MlflowClient, version: str, name: str = MODEL_NAME) -> Lineage:
    """Where a version came from: data, months, rows, fingerprints, params, metrics, code, run;
    and its promotion audit tags (``promotion.*``) when it has been champion."""
    from mlflow.exceptions import MlflowException

    mv = get_version(client, version, name)
    try:
        run = client.get_run(mv.run_id) if mv.run_id else None
    except MlflowException as exc:
        raise _registry_error(client, f"reading run {mv.run_id} of {name} version {version}",
                              exc, "see `mlops-levels level3 models`") from exc
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
    """Every version, newest first: version, aliases, model, val RMSE, run id.

    ``[]`` when the model does not exist yet; a :class:`RegistryError` when the registry fails.
    """
    from mlflow.exceptions import MlflowException

    model = _registered_model(client, name)
    if model is None:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in _alias_map(model).items():
        by_version.setdefault(version, []).append(alias)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise _registry_error(client, f"listing the versions of {name}", exc) from exc
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags or {}
        rows.append({"version": str(mv.version),
                     "aliases": sorted(by_version.get(str(mv.version), [])),
                     "model": tags.get("model.name", ""),
                     "val_rmse": float(tags["val_rmse"]) if "val_rmse" in tags else None,
                     "run_id": mv.run_id})
    return rows

