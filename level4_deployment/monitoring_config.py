"""The monitoring configuration: a TOML file, read with ``tomllib`` and validated with msgspec.

The documented default ships in the package (``level4_deployment/monitoring.toml``). A user's
file may leave keys out (they keep the default); a wrong key or value is one clear error that
names it: ``monitoring config FILE: [thresholds] mae_ratio: expected a number > 0, got 'x'``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import msgspec

from taxi_common.errors import BadInputError
from taxi_common.toml_config import explain_validation_error, read_toml

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
        hint = f"see {default_config_path().name} for the keys"
        raise ConfigError(f"monitoring config {source}: "
                          f"{explain_validation_error(exc, data, keys_hint=hint)}") from None
    except ValueError as exc:
        raise ConfigError(f"monitoring config {source}: {exc}") from None
    return config


def load_config(path: Path | None = None) -> MonitoringConfig:
    """The configuration in ``path`` (default: the one shipped in the package)."""
    path = Path(path) if path is not None else default_config_path()
    data = read_toml(path, what="monitoring config", default=default_config_path(),
                     error=ConfigError)
    return parse_config(data, str(path))
