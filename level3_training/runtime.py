"""The process environment level 3 needs, set inside a command (never at import).

Prefect reads its settings when it is imported, so :func:`prepare_environment` must run before
the first ``import prefect``. Values the user already set win: team mode is settings alone
(``MLFLOW_TRACKING_URI=http://…``, ``PREFECT_API_URL=http://…``).

The training flow reads :meth:`Settings.from_env` itself, so that a deployment run by a worker
uses the worker's paths and servers; it applies :func:`environment_defaults` there too
(:func:`apply_environment_defaults`). :func:`settings_environment` puts explicit settings into
the environment for one in-process run.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from taxi_common.errors import WorkbookError
from taxi_common.settings import Settings


class ServiceUnavailableError(WorkbookError):
    """A tracking or orchestration server that does not answer."""


def environment_defaults(settings: Settings) -> dict[str, str]:
    """The variables level 3 sets unless the user has set them already."""
    return {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # A dead tracking server must fail in seconds, not after minutes of back-off.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        # A progress bar per downloaded model, on every load and every gate, is noise.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def apply_environment_defaults(settings: Settings,
                               environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each of :func:`environment_defaults` that ``environ`` (default ``os.environ``) lacks;
    the ones it set. Nothing is overwritten."""
    env = os.environ if environ is None else environ
    added = {name: value for name, value in environment_defaults(settings).items()
             if name not in env}
    env.update(added)
    return added


#: The variables :meth:`Settings.from_env` reads for paths and tracking (not Prefect's own).
_SETTINGS_VARIABLES = ("WORKBOOK_HOME", "TLC_BASE_URL", "MLFLOW_TRACKING_URI", "DATABASE_URL",
                       "WORKBOOK_ID")


def settings_variables(settings: Settings) -> dict[str, str | None]:
    """The environment that makes :meth:`Settings.from_env` give ``settings``' paths and
    tracking store (None: the variable must be unset)."""
    return {"WORKBOOK_HOME": str(settings.workbook_home), "TLC_BASE_URL": settings.tlc_base_url,
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "DATABASE_URL": settings.database_url, "WORKBOOK_ID": settings.workbook_id}


@contextmanager
def settings_environment(settings: Settings,
                         environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """``environ`` (default ``os.environ``) describing ``settings`` inside the block, restored
    afterwards: how an in-process caller hands explicit settings to the flow, which reads its
    settings from the environment like a worker-run deployment does. The environment belongs to
    the process: one such run at a time per process (as with the CLI)."""
    env = os.environ if environ is None else environ
    saved = {name: env.get(name) for name in _SETTINGS_VARIABLES}
    try:
        _set_or_unset(env, settings_variables(settings))
        yield
    finally:
        _set_or_unset(env, saved)


def _set_or_unset(env: MutableMapping[str, str], values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


def prepare_environment(settings: Settings,
                        environ: MutableMapping[str, str] | None = None) -> None:
    """Set level 3's defaults in ``environ`` (default ``os.environ``) and create PREFECT_HOME.

    Warns on stderr when prefect was imported before: its settings are then already fixed.
    """
    env = os.environ if environ is None else environ
    apply_environment_defaults(settings, env)
    if settings.prefect_api_url:
        env.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    if environ is None and "prefect" in sys.modules and "PREFECT_API_URL" not in env:
        print("warning: prefect was imported before level 3 set PREFECT_HOME", file=sys.stderr)


def check_reachable(url: str, what: str, fix: str, timeout: float = 3.0) -> None:
    """Raise :class:`ServiceUnavailableError` unless ``url`` answers an HTTP request.

    Any HTTP status counts as an answer (the server is up); a refused or timed-out connection
    does not.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - a URL from settings
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailableError(
            f"{what} at {url} is not reachable ({reason}): {fix}") from None


def check_services(settings: Settings, environ: MutableMapping[str, str] | None = None, *,
                   prefect: bool = True) -> None:
    """Fail fast, with one line, when a configured tracking (or Prefect) server does not answer."""
    env = os.environ if environ is None else environ
    tracking = settings.tracking_uri
    if tracking.startswith(("http://", "https://")):
        check_reachable(f"{tracking.rstrip('/')}/health", "the MLflow tracking server",
                        "start it (mlflow server …) or unset MLFLOW_TRACKING_URI")
    api = env.get("PREFECT_API_URL") or settings.prefect_api_url
    if prefect and api:
        check_reachable(f"{api.rstrip('/')}/health", "the Prefect API",
                        "start it (prefect server start) or unset PREFECT_API_URL")


class _DropUserErrorTracebacks(logging.Filter):
    """Keep the message of a failed task, drop the traceback when it is the user's error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], WorkbookError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
    """Prefect logs a traceback for every failed task; for a user error one line is enough."""
    quiet = _DropUserErrorTracebacks()
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine",
                 "prefect.flow_engine", "prefect.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropUserErrorTracebacks) for f in logger.filters):
            logger.addFilter(quiet)
