"""The daily monitoring computation: one Evidently report per day of logged traffic.

For a day, the champion's logged predictions (inputs + prediction, joined with the actuals known
so far) are sampled to a bounded size and compared with the reference (the champion's
validation month with its predictions, sampled too):

- drift of each input and of the prediction, with the explicit methods and thresholds of the
  configuration (``ValueDrift`` per column, ``DriftedColumnsCount`` for the share), and of the
  actual duration where known (stored, not alerted: weekends move it as much as a drift);
- the share of missing values in the inputs and the prediction (per column, and of all cells);
- RMSE and MAE where actuals are known, and their ratios to the reference's.

The numbers go into ``monitoring_metrics`` (one row per day and metric: re-running a day
replaces them), the HTML into ``$WORKBOOK_HOME/reports/monitoring/<day>.html``, the snapshot
into the Evidently workspace. A value above its threshold writes an alert row, logs a warning
and, when the configuration has a webhook URL, POSTs the alert as JSON (new alerts only, so a
re-run does not notify twice).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from level4_deployment import store
from level4_deployment.monitoring_config import MonitoringConfig
from level4_deployment.reference import FEATURES, Reference
from taxi_common.errors import BadInputError
from taxi_common.files import atomic_write
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

ZONES = ("PULocationID", "DOLocationID")
MONITORED = (*FEATURES, "prediction")
MAX_DAYS = 366


@dataclass
class DayResult:
    """What monitoring one day found."""

    day: dt.date
    rows: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    new_alerts: int = 0
    model_version: str | None = None
    html: str | None = None
    snapshot_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the day and dates as ISO strings."""
        out = asdict(self)
        out["day"] = self.day.isoformat()
        for alert in out["alerts"]:
            alert["day"] = alert["day"].isoformat()
        return out


def parse_day(text: str) -> dt.date:
    """``"2021-03-05"`` -> a date; a clear error otherwise."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise BadInputError(f"day {text!r} is not of the form YYYY-MM-DD") from None


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    if last < first:
        raise BadInputError(f"--to {last} is before --from {first}")
    n = (last - first).days + 1
    if n > MAX_DAYS:
        raise BadInputError(f"{n} days from {first} to {last}: monitor at most {MAX_DAYS} at once")
    return [first + dt.timedelta(days=i) for i in range(n)]


def day_traffic(engine: Engine, day: dt.date, *, by: str = "logged_at",
                variant: str = "champion") -> pd.DataFrame:
    """The day's logged predictions of ``variant`` with the actual duration where known.

    ``by="logged_at"``: predictions served that (UTC) day. ``by="pickup"``: trips picked up that
    day (replayed historical trips are logged today; only rides with an actual can be placed).
    """
    start = dt.datetime.combine(day, dt.time())
    frame = store.joined_predictions(engine, start, start + dt.timedelta(days=1), by=by,
                                     labelled_only=False)
    return frame[frame["variant"] == variant].reset_index(drop=True)


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    return frame.sample(rows, random_state=seed).reset_index(drop=True)


def _report_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns Evidently sees: zones as category labels, numbers as floats."""
    out = pd.DataFrame({zone: frame[zone].astype("int64").astype(str) for zone in ZONES})
    for name in ("trip_distance", "prediction", "duration"):
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return out


def _drift_methods(config: MonitoringConfig) -> tuple[dict[str, str], dict[str, float]]:
    drift = config.drift
    methods = {c: drift.categorical_method if c in ZONES else drift.numerical_method
               for c in (*MONITORED, "duration")}
    thresholds = {c: drift.categorical_threshold if c in ZONES else drift.numerical_threshold
                  for c in methods}
    return methods, thresholds


def build_report(current: pd.DataFrame, reference: pd.DataFrame, config: MonitoringConfig, *,
                 day: dt.date, model_version: str | None) -> Any:
    """Run the day's Evidently report (current and reference passed by keyword); the snapshot."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.metrics import (
        MAE,
        RMSE,
        DriftedColumnsCount,
        MissingValueCount,
        RowCount,
        ValueDrift,
    )

    labelled = bool(current["duration"].notna().any())
    methods, thresholds = _drift_methods(config)
    columns = list(MONITORED)
    metrics: list[Any] = [
        DriftedColumnsCount(columns=columns, per_column_method={c: methods[c] for c in columns},
                            per_column_threshold={c: thresholds[c] for c in columns},
                            drift_share=config.thresholds.drift_share),
        *[ValueDrift(column=c, method=methods[c], threshold=thresholds[c]) for c in columns],
        # per column: DatasetMissingValueCount ignores its columns= in 0.7.23 and counts the
        # actuals not yet known as missing
        *[MissingValueCount(column=c) for c in columns],
        RowCount(),
    ]
    if labelled:
        metrics += [ValueDrift(column="duration", method=methods["duration"],
                               threshold=thresholds["duration"]), RMSE(), MAE()]
    definition = DataDefinition(
        numerical_columns=["trip_distance", "prediction", "duration"],
        categorical_columns=list(ZONES),
        regression=[Regression(target="duration", prediction="prediction")] if labelled else None)
    report = Report(metrics, metadata={"day": day.isoformat(),
                                       "model_version": model_version or "unknown"})
    return report.run(current_data=Dataset.from_pandas(current, data_definition=definition),
                      reference_data=Dataset.from_pandas(reference, data_definition=definition),
                      timestamp=dt.datetime.combine(day, dt.time()),
                      name=f"monitoring {day.isoformat()}")


def snapshot_values(snapshot: Any) -> dict[str, float]:
    """The numbers of a day's snapshot, found by metric type (never by position)."""
    values: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        value = metric["value"]
        if kind == "ValueDrift":
            values[f"drift_{metric['config']['column']}"] = float(value)
        elif kind == "DriftedColumnsCount":
            values["drifted_columns"] = float(value["count"])
            values["drift_share"] = float(value["share"])
        elif kind == "MissingValueCount":
            values[f"missing_{metric['config']['column']}"] = float(value["share"])
        elif kind == "RowCount":
            values["evaluated_rows"] = float(value)
        elif kind == "RMSE":
            values["rmse"] = float(value)
        elif kind == "MAE":
            values["mae"] = float(value["mean"])
    missing = [values[f"missing_{c}"] for c in MONITORED if f"missing_{c}" in values]
    if missing:
        values["missing_share"] = float(np.mean(missing))  # share of missing cells
    return values


def breaches(values: dict[str, float | None], config: MonitoringConfig,
             day: dt.date) -> list[dict[str, Any]]:
    """The alerts a day's values raise: every value above its threshold, where enough rows."""
    t = config.thresholds
    checks: list[tuple[str, float, str]] = []
    if (values.get("evaluated_rows") or 0) >= t.min_rows:
        checks += [("drift_share", t.drift_share, "share of drifted inputs and prediction"),
                   ("drift_prediction", t.prediction_drift,
                    f"{config.drift.numerical_method} distance of the prediction"),
                   ("missing_share", t.missing_share, "share of missing values")]
    if (values.get("evaluated_labelled_rows") or 0) >= t.min_labelled_rows:
        checks += [("mae_ratio", t.mae_ratio, "MAE relative to the reference's"),
                   ("rmse_ratio", t.rmse_ratio, "RMSE relative to the reference's")]
    found = []
    for metric, threshold, meaning in checks:
        value = values.get(metric)
        if value is not None and value > threshold:
            found.append({"day": day, "metric": metric, "value": float(value),
                          "threshold": float(threshold),
                          "message": f"{day}: {metric} = {value:.3f} > {threshold:g} "
                                     f"({meaning})"})
    return found


def notify(alerts: Iterable[dict[str, Any]], config: MonitoringConfig,
           model_version: str | None) -> int:
    """POST each alert as JSON to the configured webhook; how many were delivered. A webhook
    that fails is logged, never fatal: the alert is in the table either way."""
    url = config.alerts.webhook_url
    if not url:
        return 0
    import httpx

    delivered = 0
    # Only the configured URL: no proxy or certificate settings from the environment
    # (trust_env=False), and no redirects followed to somewhere else.
    with httpx.Client(timeout=config.alerts.webhook_timeout, trust_env=False,
                      follow_redirects=False) as client:
        for alert in alerts:
            payload = {**alert, "day": alert["day"].isoformat(), "model_version": model_version,
                       "source": "mlops-levels level4 monitor"}
            payload.pop("created_at", None)
            try:
                client.post(url, json=payload).raise_for_status()
                delivered += 1
            except httpx.HTTPError as exc:
                logger.warning("alert webhook %s failed: %s", url, exc)
    return delivered


def _model_version(traffic: pd.DataFrame) -> str | None:
    versions = traffic["model_version"].dropna()
    return str(versions.mode().iloc[0]) if len(versions) else None


def _save_html(snapshot: Any, settings: Settings, day: dt.date) -> str:
    path = settings.reports_dir / "monitoring" / f"{day.isoformat()}.html"
    with atomic_write(path) as (out, tmp):
        out.close()
        snapshot.save_html(str(tmp))  # Evidently writes nothing when given a pathlib.Path
    return str(path)


def monitor_day(day: dt.date, *, engine: Engine, reference: Reference,
                config: MonitoringConfig, settings: Settings, by: str = "logged_at",
                html: bool = True, workspace: bool = True) -> DayResult:
    """Monitor one day (see the module doc); idempotent: a re-run replaces the day's numbers."""
    traffic = day_traffic(engine, day, by=by)
    result = DayResult(day=day, rows=len(traffic), model_version=_model_version(traffic))
    values: dict[str, float | None] = {
        "rows": float(len(traffic)), "labelled_rows": float(traffic["duration"].notna().sum())}
    if traffic.empty:
        logger.info("%s: no champion traffic logged (by %s)", day, by)
        result.metrics = values
        store.write_metrics(engine, day, values, None)
        return result
    if reference.model_version and result.model_version not in (None, reference.model_version):
        logger.warning("%s: traffic served by model %s, reference made with %s", day,
                       result.model_version, reference.model_version)
    sampling = config.sampling
    current = _report_frame(_sample(traffic, sampling.day_rows, sampling.seed + day.toordinal()))
    ref = _report_frame(_sample(reference.frame, sampling.reference_rows, sampling.seed))
    snapshot = build_report(current, ref, config, day=day, model_version=result.model_version)
    values.update(snapshot_values(snapshot))
    values["evaluated_labelled_rows"] = float(current["duration"].notna().sum())
    values["reference_mae"], values["reference_rmse"] = reference.mae, reference.rmse
    if values.get("mae") is not None:
        values["mae_ratio"] = values["mae"] / reference.mae
        values["rmse_ratio"] = values["rmse"] / reference.rmse
    store.write_metrics(engine, day, values, result.model_version)
    result.metrics = values
    result.alerts = breaches(values, config, day)
    new = store.write_alerts(engine, result.alerts)
    result.new_alerts = len(new)
    for alert in result.alerts:
        logger.warning("ALERT %s", alert["message"])
    notify(new, config, result.model_version)
    if html:
        result.html = _save_html(snapshot, settings, day)
    if workspace:
        from level4_deployment.dashboard import add_day_snapshot

        result.snapshot_id = add_day_snapshot(settings, snapshot, day)
    return result


def monitor_days(days: Iterable[dt.date], **options: Any) -> list[DayResult]:
    """:func:`monitor_day` for each day, in order."""
    return [monitor_day(day, **options) for day in days]


def format_results(results: Iterable[DayResult]) -> str:
    """A line per day: rows, drift share, prediction drift, MAE/RMSE ratios, alerts."""
    def number(values: dict[str, float | None], key: str, digits: int = 3) -> str:
        value = values.get(key)
        return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"

    lines = [f"{'day':<11}{'rows':>7}{'labelled':>9}{'drift':>7}{'pred':>7}{'MAE x':>7}"
             f"{'RMSE x':>7}  alerts"]
    for r in results:
        m = r.metrics
        lines.append(f"{r.day.isoformat():<11}{r.rows:>7}{int(m.get('labelled_rows') or 0):>9}"
                     f"{number(m, 'drift_share', 2):>7}{number(m, 'drift_prediction'):>7}"
                     f"{number(m, 'mae_ratio'):>7}{number(m, 'rmse_ratio'):>7}  "
                     + (", ".join(a["metric"] for a in r.alerts) or "-"))
    return "\n".join(lines)
