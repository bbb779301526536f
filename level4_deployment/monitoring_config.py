"""The monitoring configuration: a TOML file, read with ``tomllib`` and validated with msgspec.

The documented default ships in the package (``level4_deployment/monitoring.toml``). A user's
file may leave keys out (they keep the default); a wrong key or value is one clear error that
names it: ``monitoring config FILE: [thresholds] mae_ratio: expected a number > 0, got 'x'``.
"""

from __future__ import annotations

import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import msgspec

from taxi_common.errors import BadInputError

DEFAULT_CONFIG_NAME = "monitoring.toml"
#: Drift methods whose score grows with drift (so "score > threshold" means drift).
NUMERICAL_METHODS = ("wasserstein", "psi", "jensenshannon", "kl_div", "hellinger", "ed")
CATEGORICAL_METHODS = ("jensenshannon", "psi", "kl_div", "hellinger")

Positive = Annotated[float, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Rows = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(BadInputError):
    """A monitoring configuration that cannot be used."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class Sampling(_Section):
    """How many rows of the reference and of a day go into a report."""

    reference_rows: Annotated[int, msgspec.Meta(ge=100)] = 5000
    day_rows: Annotated[int, msgspec.Meta(ge=100)] = 2000
    seed: int = 0


class Drift(_Section):
    """Evidently's drift method and threshold per column type (explicit, never the default)."""

    numerical_method: str = "wasserstein"
    numerical_threshold: Positive = 0.2
    categorical_method: str = "jensenshannon"
    categorical_threshold: Positive = 0.3


class Thresholds(_Section):
    """Alert when a day's value is above these."""

    mae_ratio: Positive = 1.12
    rmse_ratio: Positive = 1.20
    prediction_drift: Positive = 0.25
    drift_share: Share = 0.5
    missing_share: Share = 0.01
    min_rows: Rows = 500
    min_labelled_rows: Rows = 500


class Alerts(_Section):
    """Where alerts go besides the alerts table and the log."""

    webhook_url: str = ""
    webhook_timeout: Positive = 5.0


class MonitoringConfig(_Section):
    """The whole configuration (see ``monitoring.toml``)."""

    sampling: Sampling = msgspec.field(default_factory=Sampling)
    drift: Drift = msgspec.field(default_factory=Drift)
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    alerts: Alerts = msgspec.field(default_factory=Alerts)


def default_config_path() -> Path:
    """The documented default shipped in the package."""
    return Path(str(files("level4_deployment").joinpath(DEFAULT_CONFIG_NAME)))


_AT = re.compile(r"^(?P<reason>.*?) - at `\$\.(?P<path>[\w.]+)`$")


def _where(path: str) -> str:
    """``thresholds.mae_ratio`` -> ``[thresholds] mae_ratio``."""
    section, _, key = path.partition(".")
    return f"[{section}] {key}" if key else f"[{section}]"


def _value_at(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _explain(exc: msgspec.ValidationError, data: dict[str, Any]) -> str:
    """msgspec's message with the TOML key written as the user wrote it, and the value given."""
    text = str(exc)
    match = _AT.match(text)
    if match:
        reason, where = match["reason"], _where(match["path"])
    else:
        reason, where = text, "the file"
    unknown = re.match(r"Object contains unknown field `(\w+)`", reason)
    if unknown:
        key = f"{where} {unknown[1]}" if match else f"[{unknown[1]}]"
        return f"{key.strip()} is not a setting (see {default_config_path().name} for the keys)"
    given = f", got {_value_at(data, match['path'])!r}" if match and "got" not in reason else ""
    return f"{where}: {reason[0].lower()}{reason[1:]}{given}"


def _check_methods(config: MonitoringConfig) -> None:
    drift = config.drift
    if drift.numerical_method not in NUMERICAL_METHODS:
        raise ValueError(f"[drift] numerical_method: {drift.numerical_method!r} is not one of "
                         f"{', '.join(NUMERICAL_METHODS)}")
    if drift.categorical_method not in CATEGORICAL_METHODS:
        raise ValueError(f"[drift] categorical_method: {drift.categorical_method!r} is not one "
                         f"of {', '.join(CATEGORICAL_METHODS)}")
    url = config.alerts.webhook_url
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"[alerts] webhook_url: {url!r} is not an http(s) URL")


def parse_config(data: dict[str, Any], source: str = "the monitoring config") -> MonitoringConfig:
    """Validate a parsed TOML document; :class:`ConfigError` names the key at fault."""
    try:
        config = msgspec.convert(data, MonitoringConfig)
        _check_methods(config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"monitoring config {source}: {_explain(exc, data)}") from None
    except ValueError as exc:
        raise ConfigError(f"monitoring config {source}: {exc}") from None
    return config


def load_config(path: Path | None = None) -> MonitoringConfig:
    """The configuration in ``path`` (default: the one shipped in the package)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"monitoring config {path} does not exist (the documented default "
                          f"is {default_config_path()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"monitoring config {path} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"monitoring config {path} is not valid TOML: {exc}") from None
    return parse_config(data, str(path))
