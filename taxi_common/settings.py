"""Settings in one place: a frozen dataclass read from the environment and passed explicitly.

Reading settings never creates a directory; callers create what they write to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

TLC_PUBLIC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"


@dataclass(frozen=True)
class Settings:
    """Where the workbook keeps its state and which services it talks to.

    ``workbook_home`` holds the data cache, models, mlflow.db, Prefect home, logs and reports.
    The service URLs are ``None`` in the embedded default (local files, temporary servers).
    ``workbook_id`` names the workbook on a shared server (level 5's Prefect resource,
    deployments and automation); ``None`` derives it from ``workbook_home``
    (:func:`level5_automation.events.workbook_id`).
    """

    workbook_home: Path
    tlc_base_url: str = TLC_PUBLIC_BASE_URL
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    database_url: str | None = None
    workbook_id: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        home = Path(env.get("WORKBOOK_HOME") or ".workbook").expanduser().resolve()
        return cls(
            workbook_home=home,
            tlc_base_url=(env.get("TLC_BASE_URL") or TLC_PUBLIC_BASE_URL).rstrip("/"),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            prefect_api_url=env.get("PREFECT_API_URL") or None,
            database_url=env.get("DATABASE_URL") or None,
            workbook_id=env.get("WORKBOOK_ID") or None,
        )

    def with_home(self, home: Path) -> Settings:
        """A copy of these settings with another ``workbook_home``."""
        return replace(self, workbook_home=Path(home).resolve())

    @property
    def data_cache_dir(self) -> Path:
        """Downloaded TLC files: ``<home>/data/tlc``."""
        return self.workbook_home / "data" / "tlc"

    @property
    def models_dir(self) -> Path:
        """Model files written by level 1 and level 2."""
        return self.workbook_home / "models"

    @property
    def reports_dir(self) -> Path:
        """Executed notebooks, HTML reports and charts."""
        return self.workbook_home / "reports"

    @property
    def logs_dir(self) -> Path:
        """Server and run logs."""
        return self.workbook_home / "logs"

    @property
    def prefect_home(self) -> Path:
        """``PREFECT_HOME`` for the embedded Prefect server (never ``~/.prefect``)."""
        return self.workbook_home / "prefect"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the setting, or an absolute SQLite path under the home."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.workbook_home / 'mlflow.db'}"
