"""The loop, as plain functions a Prefect flow can wrap one task each: monitor → decide →
retrain → evaluate and promote (or reject, or wait for approval) → watch → roll back.

Every step takes a :class:`Loop` (settings, the shared database, the policy) and the loop's
``today``: a real date in production, a virtual one in the simulation. The loop keeps no state
of its own between ticks: what it needs — the last retrain, the champion's training window, the
latest drift, a pending approval, a promotion under watch — is read back from the events table
and the registry at each tick, so a tick can run in any process (a Prefect worker, a test).

Failure safety: :func:`tick` runs each step under :func:`_guarded`. A step that raises (training
fails on bad data, the tracking store does not answer, the registry refuses) records an
``error`` event naming the step and the error; the champion stays what it was (level 3's
``promote`` and ``rollback`` move aliases all or nothing), and the next tick runs as usual.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from level3_training.data import DataValidationError
from level5_automation.events import Event, latest, pending_approvals, read_events, record_event
from level5_automation.policy import Policy, Training, Window
from level5_automation.training import (
    DayWindow,
    FittedChallenger,
    count_labelled,
    fit_challenger,
    labelled_rows,
    register_challenger,
)
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

ACTOR = "level5 loop"
ONE_DAY = dt.timedelta(days=1)
Trainer = Callable[[pd.DataFrame, Training], FittedChallenger]


@dataclass
class Loop:
    """What every step needs: settings, the shared database, the policy, and the trainer (the
    simulation swaps it to inject faults)."""

    settings: Settings
    engine: Engine
    policy: Policy
    actor: str = ACTOR
    trainer: Trainer = fit_challenger
    _pipelines: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self) -> Any:
        """An MLflow client of the settings' tracking store."""
        from level3_training.registry import client_for

        return client_for(self.settings.tracking_uri)

    def aliases(self) -> dict[str, str]:
        """The registry's aliases now (``champion``, ``previous``, ``challenger``)."""
        from level3_training.registry import aliases

        return aliases(self.client())

    def pipeline(self, version: str) -> Any:
        """The fitted pipeline of pinned ``version`` (loaded once per loop)."""
        if version not in self._pipelines:
            from level3_training.registry import load_version

            self._pipelines[version] = load_version(self.client(), version)[1]
        return self._pipelines[version]

    def remember(self, version: str, pipeline: Any) -> None:
        """Keep a pipeline just registered, so that it is not downloaded again."""
        self._pipelines[version] = pipeline

    def reference_path(self, version: str) -> Path:
        """Where the monitoring reference of ``version`` is kept."""
        return self.settings.workbook_home / "level5" / "references" / f"v{version}.parquet"

    def record(self, day: dt.date, kind: str, reason: str, version: str | None = None,
               **details: Any) -> Event:
        """Store a decision in the events table (logged, and emitted to Prefect if configured)."""
        return record_event(self.engine, Event(day, kind, reason, version, details),
                            settings=self.settings)


@dataclass(frozen=True)
class Decision:
    """Whether to retrain today, why, and on which days."""

    retrain: bool
    reason: str
    trigger: str | None = None  # "drift", "catch-up" or "schedule"
    window: DayWindow | None = None
    holdout: DayWindow | None = None
    rows: int = 0


@dataclass
class TickResult:
    """What one tick decided, and the champion after it."""

    day: dt.date
    events: list[Event] = field(default_factory=list)
    champion: str | None = None
    champion_changed: bool = False
    decision: Decision | None = None
    before: str | None = None  # the champion when the tick began
    rolled_back: bool = False
    aborted: bool = False  # the registry could not be read: nothing was decided


# --- reading the loop's state back -----------------------------------------------------------

def training_window(found: Sequence[Event], version: str | None) -> DayWindow | None:
    """The days ``version`` was trained on, from its ``retrain`` event."""
    event = latest((e for e in found if e.version == version), "retrain")
    if event is None or "window" not in event.details:
        return None
    first, last = event.details["window"]
    return DayWindow(dt.date.fromisoformat(first), dt.date.fromisoformat(last))


def last_retrain_day(found: Sequence[Event]) -> dt.date | None:
    """The day of the last retrain attempt (one that failed counts: it is not retried at once)."""
    days = [e.day for e in found
            if e.kind == "retrain" or e.kind == "error" and e.details.get("step") == "retrain"]
    return max(days) if days else None


def change_point(found: Sequence[Event], today_alert: dt.date | None = None) -> dt.date | None:
    """The first monitored day of the latest streak of alerted days (consecutive days): where
    the world changed, as far as monitoring can tell."""
    days = {dt.date.fromisoformat(e.details["monitored_day"]) for e in found
            if e.kind == "alert" and e.details.get("monitored_day")}
    if today_alert is not None:
        days.add(today_alert)
    if not days:
        return None
    streak = max(days)
    while streak - ONE_DAY in days:
        streak -= ONE_DAY
    return streak


def caught_up(found: Sequence[Event], drift_start: dt.date) -> bool:
    """Whether catching up after the drift of ``drift_start`` is over: its latest catch-up
    challenger was rejected (more days of the new world no longer beat the champion)."""
    catch_ups = [e for e in found if e.kind == "retrain" and e.day >= drift_start
                 and e.details.get("trigger") == "catch-up"]
    if not catch_ups:
        return False
    version = catch_ups[-1].version
    return any(e.kind == "reject" and e.version == version for e in found)


# --- monitor ---------------------------------------------------------------------------------

def reference_for(loop: Loop, day: dt.date) -> Path:
    """The monitoring reference for ``day``: that of the version that served most of its
    rides (the champion's when that version has none)."""
    from level4_deployment.monitoring import day_traffic

    traffic = day_traffic(loop.engine, day, by="pickup")
    versions = traffic["model_version"].dropna()
    served = str(versions.mode().iloc[0]) if len(versions) else loop.aliases().get("champion")
    path = loop.reference_path(str(served))
    if not path.is_file():
        path = loop.reference_path(str(loop.aliases().get("champion")))
    return path


def monitor(loop: Loop, day: dt.date, *, config: Any, html: bool = False,
            workspace: bool = False) -> Any:
    """Level 4's daily monitoring of ``day`` (by pickup: the day's rides whose actuals are in),
    against the reference of the version that served most of that day."""
    from level4_deployment.monitoring import monitor_day
    from level4_deployment.reference import load_reference

    return monitor_day(day, engine=loop.engine, reference=load_reference(reference_for(loop, day)),
                       config=config, settings=loop.settings, by="pickup", html=html,
                       workspace=workspace)


def last_labelled_day(engine: Engine) -> dt.date | None:
    """The pickup day of the latest ride whose actual is known (actuals arrive a day at a
    time: that day is complete), or None when there are none."""
    from sqlalchemy import func, select

    from level4_deployment.store import actuals

    with engine.connect() as conn:
        latest_pickup = conn.execute(select(func.max(actuals.c.pickup_datetime))).scalar_one()
    if latest_pickup is None:
        return None
    if isinstance(latest_pickup, str):  # SQLite without type affinity
        latest_pickup = dt.datetime.fromisoformat(latest_pickup)
    return latest_pickup.date()


def breaches(loop: Loop, monitored_day: dt.date) -> list[dict[str, Any]]:
    """The policy's triggers that ``monitored_day``'s stored metrics break: metric, value,
    threshold and the version that served the day (none on a day with too few labelled rows)."""
    from level4_deployment.store import read_metrics

    stored = read_metrics(loop.engine, monitored_day, monitored_day)
    values = {m: v for m, v in zip(stored["metric"], stored["value"], strict=True)
              if v is not None and np.isfinite(v)}
    if values.get("labelled_rows", 0) < loop.policy.triggers.min_labelled_rows:
        return []
    versions = stored["model_version"].dropna()
    served = str(versions.iloc[0]) if len(versions) else None
    return [{"metric": metric, "value": float(values[metric]), "threshold": float(threshold),
             "served_by": served}
            for metric, threshold in loop.policy.triggers.above.items()
            if metric in values and values[metric] > threshold]


# --- decide ----------------------------------------------------------------------------------

def window_for(w: Window, labelled_through: dt.date,
               drift_start: dt.date | None) -> tuple[DayWindow, DayWindow] | str:
    """The training window and the holdout for a retrain with actuals through
    ``labelled_through`` under the policy's ``[window]``, or why there is none."""
    holdout = DayWindow(labelled_through - dt.timedelta(days=w.holdout_days - 1),
                        labelled_through)
    last = holdout.first - ONE_DAY
    first = last - dt.timedelta(days=w.days - 1)
    if w.since_drift and drift_start is not None and drift_start > first:
        first = drift_start
    if first > last:
        return (f"no labelled day since the drift began on {drift_start} is left before the "
                f"{w.holdout_days}-day holdout")
    return DayWindow(first, last), holdout


def decide(loop: Loop, today: dt.date, labelled_through: dt.date, alerts: Sequence[dict],
           found: Sequence[Event], champion: str | None, *, force: str | None = None
           ) -> Decision:
    """Retrain today or not, and why: an alert (at most every ``cooldown_days``), a catch-up
    after a drift, or the schedule; never while a promotion waits for approval, and only with
    enough labelled rows (``[window] min_rows``; ``[triggers] min_new_rows`` for the schedule).
    ``force`` (a reason) asks for a retrain whatever the triggers say (a person's request)."""
    t = loop.policy.triggers
    waiting = pending_approvals(loop.engine)
    if waiting:
        return Decision(False, f"v{waiting[0].version} waits for approval since "
                        f"{waiting[0].event.day}: no retraining meanwhile")
    last = last_retrain_day(found)
    since = (today - last).days if last else None
    drift_start = change_point(found, labelled_through if alerts else None)
    trained_on = training_window(found, champion)
    trigger, why = None, ""
    served_by = {a.get("served_by") for a in alerts}
    if force:
        trigger, why = "manual", force
    elif alerts and champion not in served_by:
        return Decision(False, f"the alerted day was served by v{', v'.join(map(str, served_by))}"
                        f", not by the champion v{champion}: no retrain for it")
    elif alerts and (since is None or since >= t.cooldown_days):
        trigger = "drift"
        why = ", ".join(f"{a['metric']} {a['value']:.3f} > {a['threshold']:g}" for a in alerts)
        why += f" on {labelled_through}"
    elif (t.catch_up_every_days and drift_start and trained_on
          and trained_on.first >= drift_start and trained_on.days < loop.policy.window.days
          and (since is None or since >= t.catch_up_every_days)
          and not caught_up(found, drift_start)):
        trigger = "catch-up"
        why = (f"v{champion} learnt from {trained_on.days} day(s) since the drift of "
               f"{drift_start}; {since} days since the last retrain")
    elif t.every_days and (since is None or since >= t.every_days):
        trigger = "schedule"
        why = f"{since} days since the last retrain" if since is not None else "no retrain yet"
    if trigger is None:
        return Decision(False, "no trigger")
    window = window_for(loop.policy.window, labelled_through, drift_start)
    if isinstance(window, str):
        return Decision(False, f"{trigger} ({why}) but {window}: waiting", trigger)
    train, holdout = window
    rows = count_labelled(loop.engine, train)
    if rows < loop.policy.window.min_rows:
        return Decision(False, f"{trigger} ({why}) but only {rows} labelled rides in "
                        f"{train.label()} (the policy needs {loop.policy.window.min_rows}): "
                        "waiting", trigger, train, holdout, rows)
    if trigger in ("catch-up", "schedule") and trained_on is not None:
        newer = DayWindow(trained_on.last + ONE_DAY, train.last)
        new_rows = count_labelled(loop.engine, newer) if newer.first <= newer.last else 0
        if new_rows < t.min_new_rows:
            return Decision(False, f"{trigger} ({why}) but only {new_rows} labelled rides "
                            f"newer than v{champion}'s data (the policy needs "
                            f"{t.min_new_rows}): waiting", trigger, train, holdout, rows)
    return Decision(True, f"{trigger}: {why}", trigger, train, holdout, rows)


# --- retrain, evaluate, promote --------------------------------------------------------------

@dataclass(frozen=True)
class Challenger:
    """A registered challenger and the data it was made from."""

    version: str
    pipeline: Any
    holdout: DayWindow
    trigger: str
    event: Event


def retrain(loop: Loop, today: dt.date, decision: Decision) -> Challenger:
    """Fit a challenger on the decision's window and register it as ``@challenger``."""
    assert decision.window is not None and decision.holdout is not None
    train = labelled_rows(loop.engine, decision.window)
    if len(train) < loop.policy.window.min_rows:  # the actuals changed since the decision
        raise DataValidationError(
            f"only {len(train)} labelled rides of 1-60 minutes in {decision.window.label()} "
            f"(the policy needs {loop.policy.window.min_rows}): no challenger trained")
    fitted = loop.trainer(train, loop.policy.training)
    trigger = decision.trigger or "manual"
    version = register_challenger(loop.settings, fitted, train, decision.window, day=today,
                                  trigger=trigger, reason=decision.reason)
    loop.remember(version, fitted.pipeline)
    event = loop.record(today, "retrain", f"{decision.reason}; {fitted.model} on {len(train)} "
                        f"labelled rides of {decision.window.label()}", version, trigger=trigger,
                        window=decision.window.as_list(), holdout=decision.holdout.as_list(),
                        rows=len(train), model=fitted.model, params=fitted.params,
                        candidates=fitted.candidates)
    return Challenger(version, fitted.pipeline, decision.holdout, trigger, event)


def check_improvement(candidate_result: Any, champion_result: Any | None,
                      min_improvement: float) -> Any:
    """The promotion rule's RMSE check, by MLflow: ``validate_evaluation_results`` with
    ``MetricThreshold(min_relative_change=min_improvement, greater_is_better=False)`` against
    the champion's result on the same holdout."""
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    from level4_deployment.gate import METRIC, GateCheck

    candidate = float(candidate_result.metrics[METRIC])
    if champion_result is None:
        return GateCheck("improvement", True, f"RMSE {candidate:.4f}; no champion to beat")
    champion = float(champion_result.metrics[METRIC])
    limit = champion * (1.0 - min_improvement)
    detail = (f"RMSE {candidate:.4f} vs champion {champion:.4f} (needs <= {limit:.4f}: "
              f"{min_improvement:.1%} better)")
    threshold = (MetricThreshold(min_relative_change=float(min_improvement),
                                 greater_is_better=False) if min_improvement > 0
                 else MetricThreshold(threshold=champion, greater_is_better=False))
    try:
        mlflow.validate_evaluation_results({METRIC: threshold}, candidate_result,
                                           champion_result)
    except ModelValidationFailedException:
        return GateCheck("improvement", False, detail)
    return GateCheck("improvement", True, detail)


def promotion_rule(loop: Loop, version: str, pipeline: Any, champion: str | None,
                   holdout: pd.DataFrame, label: str) -> Any:
    """Level 4's gate on the most recent labelled holdout: the signature and smoke checks, both
    models scored by ``mlflow.models.evaluate`` (runs of level 4's deploy experiment), and the
    policy's minimum improvement; a :class:`level4_deployment.gate.GateReport`."""
    from level3_training.tracking import configure_tracking
    from level4_deployment.gate import (
        DEPLOY_EXPERIMENT,
        METRIC,
        Candidate,
        GateReport,
        check_signature,
        check_smoke,
        evaluate_on_holdout,
        signature_inputs,
    )
    from level4_deployment.models import version_signature

    client = loop.client()

    def candidate(v: str, p: Any) -> Candidate:
        return Candidate(v, p, signature_inputs(version_signature(client, v)))

    cand = candidate(version, pipeline)
    champ = candidate(champion, loop.pipeline(champion)) if champion else None
    checks = [check_signature(cand, champ), check_smoke(cand)]
    experiment_id = configure_tracking(loop.settings, DEPLOY_EXPERIMENT)
    tags = {"deploy.candidate": version, "deploy.holdout": label, "deploy.by": loop.actor}
    uri = loop.settings.tracking_uri
    cand_result = evaluate_on_holdout(pipeline, holdout, tracking_uri=uri,
                                      experiment_id=experiment_id,
                                      run_name=f"level5 rule v{version} candidate",
                                      tags={**tags, "deploy.role": "candidate"})
    champ_result = None
    if champ is not None:
        champ_result = evaluate_on_holdout(champ.pipeline, holdout, tracking_uri=uri,
                                           experiment_id=experiment_id,
                                           run_name=f"level5 rule v{version} champion "
                                           f"v{champion}",
                                           tags={**tags, "deploy.role": "champion",
                                                 "deploy.champion": str(champion)})
    checks.append(check_improvement(cand_result, champ_result,
                                    loop.policy.promotion.min_improvement))
    return GateReport(candidate_version=version, champion_version=champion, holdout=label,
                      holdout_rows=len(holdout), margin=-loop.policy.promotion.min_improvement,
                      candidate_rmse=float(cand_result.metrics[METRIC]),
                      champion_rmse=(float(champ_result.metrics[METRIC])
                                     if champ_result is not None else None),
                      checks=checks)


def write_reference(loop: Loop, version: str, pipeline: Any, rows: pd.DataFrame,
                    label: str) -> Path:
    """The monitoring reference of ``version``: its predictions on its holdout days."""
    from level4_deployment.reference import reference_frame, write_reference_frame

    return write_reference_frame(reference_frame(pipeline, rows), loop.reference_path(version),
                                 model_version=version, month=label, source="level5-traffic")


def _gate_details(report: Any) -> dict[str, Any]:
    return {"holdout": report.holdout, "holdout_rows": report.holdout_rows,
            "candidate_rmse": round(report.candidate_rmse, 6),
            "champion_rmse": (round(report.champion_rmse, 6)
                              if report.champion_rmse is not None else None),
            "champion": report.champion_version,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                       for c in report.checks]}


def evaluate_and_promote(loop: Loop, today: dt.date, challenger: Challenger) -> Event:
    """The promotion rule on the challenger's holdout; then promote (``approval = "auto"``),
    wait for a person (``"required"``: a ``pending`` event), or reject."""
    holdout = labelled_rows(loop.engine, challenger.holdout)
    champion = loop.aliases().get("champion")
    label = f"labelled traffic {challenger.holdout.label()}"
    if holdout.empty:
        raise DataValidationError(f"no labelled ride of 1-60 minutes in {label}: "
                                  f"v{challenger.version} is not judged, nor promoted")
    report = promotion_rule(loop, challenger.version, challenger.pipeline, champion, holdout,
                            label)
    details = {**_gate_details(report), "trigger": challenger.trigger}
    if not report.passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.passed)
        return loop.record(today, "reject", f"promotion rule failed on {label} ({failed})",
                           challenger.version, **details)
    write_reference(loop, challenger.version, challenger.pipeline, holdout, label)
    rule = next(c.detail for c in report.checks if c.name == "improvement")
    if loop.policy.approval.mode == "required":
        return loop.record(today, "pending", f"promotion rule passed ({rule}); waiting for "
                           f"`mlops-levels level5 approve {challenger.version}`",
                           challenger.version, **details)
    return promote_version(loop, today, challenger.version,
                           f"promotion rule passed on {label} ({rule})", **details)


def promote_version(loop: Loop, today: dt.date, version: str, reason: str,
                    **details: Any) -> Event:
    """Level 3's ``promote`` (the old champion becomes ``@previous``), then the event."""
    from level3_training.registry import promote

    moved = promote(loop.client(), version, reason=reason, actor=loop.actor)
    return loop.record(today, "promote", reason, version, replaced=moved.get("previous"),
                       **details)


def review_pending(loop: Loop, today: dt.date) -> list[Event]:
    """Act on the answers to pending promotions: promote the approved ones (unless the champion
    changed since the rule passed), reject those past ``[approval] timeout_days``."""
    out = []
    champion = loop.aliases().get("champion")
    timeout = loop.policy.approval.timeout_days
    for pending in pending_approvals(loop.engine):
        details = {k: v for k, v in pending.event.details.items() if k != "champion"}
        judged_against = pending.event.details.get("champion")
        if pending.approval is not None:
            if judged_against != champion:
                out.append(loop.record(today, "reject", f"approved, but the champion changed "
                                       f"from v{judged_against} to v{champion} since the rule "
                                       "passed: judge it again", pending.version))
                continue
            out.append(promote_version(loop, today, pending.version,
                                       f"{pending.approval.reason}; {pending.event.reason}",
                                       champion=judged_against, approved=True, **details))
        elif timeout and (today - pending.event.day).days >= timeout:
            out.append(loop.record(today, "reject", f"no answer within {timeout} days: the "
                                   "champion stays", pending.version, timeout=True))
    return out


# --- watch and roll back ---------------------------------------------------------------------

def _rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def watch(loop: Loop, today: dt.date, labelled_through: dt.date,
          found: Sequence[Event]) -> Event | None:
    """The watch after a promotion, over the first ``[watch] days`` the new champion serves:
    at each tick, its live RMSE on the watched days labelled so far is compared with the
    previous champion's on the same rides; worse by more than the margin (on at least
    ``min_rows`` rides) rolls back to ``@previous`` at once; once every watched day is labelled
    and it held, a ``watch`` event records that it stays."""
    from level3_training.registry import rollback

    w = loop.policy.watch
    aliases = loop.aliases()
    champion, previous = aliases.get("champion"), aliases.get("previous")
    if not w.days or champion is None or previous is None:
        return None
    mine = [e for e in found if e.version == champion]
    promoted = latest(mine, "promote", "watch", "rollback")
    if promoted is None or promoted.kind != "promote" or promoted.details.get("bootstrap"):
        return None
    watched = DayWindow(promoted.day + ONE_DAY, promoted.day + dt.timedelta(days=w.days))
    seen = DayWindow(watched.first, min(labelled_through, watched.last))
    if seen.last < seen.first:
        return None
    complete = labelled_through >= watched.last
    rows = labelled_rows(loop.engine, seen)
    rows = rows[rows["model_version"] == champion]
    if len(rows) < w.min_rows:
        if labelled_through >= watched.last + dt.timedelta(days=w.days):
            return loop.record(today, "watch", f"v{champion} stays: only {len(rows)} labelled "
                               f"rides in {watched.label()} to judge it by", champion,
                               window=watched.as_list(), rows=len(rows))
        return None
    actual = rows[TARGET].to_numpy(np.float64)
    live = _rmse(rows["prediction"].to_numpy(), actual)
    before = _rmse(loop.pipeline(previous).predict(rows[list(FEATURE_COLUMNS)]), actual)
    limit = before * (1.0 + w.margin)
    numbers = (f"live RMSE {live:.4f} vs v{previous}'s {before:.4f} on the same {len(rows)} "
               f"rides of {seen.label()}")
    details = {"window": seen.as_list(), "rows": len(rows), "live_rmse": round(live, 6),
               "previous_rmse": round(before, 6), "previous": previous, "margin": w.margin}
    if live > limit:
        reason = f"watch: {numbers} (limit {limit:.4f} = +{w.margin:.0%}): back to v{previous}"
        rollback(loop.client(), reason=reason, actor=loop.actor)
        return loop.record(today, "rollback", reason, previous, rolled_back=champion, **details)
    if not complete:
        return None
    return loop.record(today, "watch", f"v{champion} stays: {numbers} (limit {limit:.4f})",
                       champion, **details)


# --- one tick --------------------------------------------------------------------------------

def record_error(loop: Loop, today: dt.date, step: str, exc: BaseException,
                 champion: str | None) -> Event:
    """An ``error`` event: which step failed, how, and that the champion did not change."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    message = message if len(message) <= 300 else message[:299] + "…"
    stays = f"the champion stays v{champion}" if champion else "the champion is unchanged"
    return loop.record(today, "error", f"{step} failed ({type(exc).__name__}: {message}); "
                       f"{stays}", None, step=step, error=type(exc).__name__)


@contextmanager
def _guarded(loop: Loop, today: dt.date, step: str, out: list[Event],
             champion: str | None) -> Iterator[None]:
    """Run a step; an exception becomes an ``error`` event and the tick goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any failure: record it, keep the champion
        logger.debug("step %s failed", step, exc_info=True)
        out.append(record_error(loop, today, step, exc, champion))


def observe(loop: Loop, today: dt.date, labelled_through: dt.date, *,
            force: str | None = None) -> TickResult:
    """The first half of a tick, after monitoring: reviews of pending promotions, the watch
    (and its rollback), the triggers and the decision (an ``alert`` event when a trigger
    fires). A registry that cannot be read ends the tick (``aborted``) with an ``error``
    event."""
    result = TickResult(today)
    out = result.events
    try:
        before = loop.aliases().get("champion")
    except Exception as exc:  # noqa: BLE001 - the registry is down: nothing can be decided
        out.append(record_error(loop, today, "registry", exc, None))
        result.aborted = True
        return result
    result.champion = result.before = before
    with _guarded(loop, today, "review", out, before):
        out.extend(review_pending(loop, today))
    found = read_events(loop.engine)
    with _guarded(loop, today, "watch", out, before):
        event = watch(loop, today, labelled_through, found)
        if event is not None:
            out.append(event)
            result.rolled_back = event.kind == "rollback"
    with _guarded(loop, today, "decide", out, before):
        champion = loop.aliases().get("champion")
        alerts = breaches(loop, labelled_through)
        decision = decide(loop, today, labelled_through, alerts, found, champion, force=force)
        result.decision = decision
        if alerts:
            text = ", ".join(f"{a['metric']} {a['value']:.3f} > {a['threshold']:g}"
                             for a in alerts)
            after = ("retraining" if decision.retrain and not result.rolled_back
                     else decision.reason)
            out.append(loop.record(today, "alert", f"{text} on {labelled_through}; {after}",
                                   alerts[0].get("served_by") or champion,
                                   monitored_day=labelled_through.isoformat(),
                                   breaches=alerts))
        logger.info("%s: %s", today, decision.reason)
    return result


def replan(loop: Loop, today: dt.date, labelled_through: dt.date) -> TickResult:
    """The decision of :func:`observe` taken again from the stored state, recording nothing:
    what a retrain started by an event (a Prefect automation on ``level5.alert``) does before
    it trains. A retrain or a rollback already recorded ``today`` makes it a no."""
    result = TickResult(today)
    try:
        result.champion = result.before = loop.aliases().get("champion")
    except Exception as exc:  # noqa: BLE001 - the registry is down
        result.events.append(record_error(loop, today, "registry", exc, None))
        result.aborted = True
        return result
    found = read_events(loop.engine)
    with _guarded(loop, today, "decide", result.events, result.champion):
        result.rolled_back = any(e.kind == "rollback" and e.day == today for e in found)
        alerts = breaches(loop, labelled_through)
        result.decision = decide(loop, today, labelled_through, alerts, found, result.champion)
    return result


def retrain_step(loop: Loop, today: dt.date, result: TickResult) -> Challenger | None:
    """Retrain when the tick's decision says so (and nothing was rolled back): the challenger,
    or None (an ``error`` event when training failed)."""
    decision = result.decision
    if result.aborted or decision is None or not decision.retrain or result.rolled_back:
        return None
    challenger = None
    with _guarded(loop, today, "retrain", result.events, result.champion):
        challenger = retrain(loop, today, decision)
        result.events.append(challenger.event)
    return challenger


def promote_step(loop: Loop, today: dt.date, result: TickResult,
                 challenger: Challenger) -> Event | None:
    """The promotion rule on the challenger, then ``promote``, ``pending`` or ``reject``."""
    event = None
    with _guarded(loop, today, "promotion rule", result.events, result.champion):
        event = evaluate_and_promote(loop, today, challenger)
        result.events.append(event)
    return event


def finish(loop: Loop, today: dt.date, result: TickResult) -> TickResult:
    """The champion after the tick (read back from the registry)."""
    if result.aborted:
        return result
    with _guarded(loop, today, "registry", result.events, result.champion):
        result.champion = loop.aliases().get("champion")
    result.champion_changed = result.champion != result.before
    return result


def tick(loop: Loop, today: dt.date, labelled_through: dt.date, *,
         force: str | None = None) -> TickResult:
    """One turn of the loop at the end of ``today``, with actuals known through
    ``labelled_through`` (whose monitoring has run): reviews of pending promotions, the watch,
    the triggers, then retraining and the promotion rule if the policy says so (or ``force``,
    a reason, asks for it). A registry that cannot be read ends the tick with an ``error``
    event; the service keeps serving the champion it has.

    The steps are :func:`observe`, :func:`retrain_step`, :func:`promote_step` and
    :func:`finish`; level 5's Prefect flows (:mod:`level5_automation.flows`) run the same ones
    as tasks."""
    result = observe(loop, today, labelled_through, force=force)
    challenger = retrain_step(loop, today, result)
    if challenger is not None:
        promote_step(loop, today, result, challenger)
    return finish(loop, today, result)


def bootstrap(loop: Loop, today: dt.date, train: pd.DataFrame, holdout: pd.DataFrame,
              window: DayWindow, holdout_window: DayWindow) -> str:
    """The first champion: fitted by the policy's recipe on ``train`` (labelled trips from
    before the loop starts), registered, promoted, its reference written; its version."""
    fitted = loop.trainer(train, loop.policy.training)
    reason = f"first champion: {fitted.model} on {len(train)} trips of {window.label()}"
    version = register_challenger(loop.settings, fitted, train, window, day=today,
                                  trigger="bootstrap", reason=reason)
    loop.remember(version, fitted.pipeline)
    loop.record(today, "retrain", reason, version, trigger="bootstrap", bootstrap=True,
                window=window.as_list(), holdout=holdout_window.as_list(), rows=len(train),
                model=fitted.model, params=fitted.params, candidates=fitted.candidates)
    label = f"trips {holdout_window.label()}"
    write_reference(loop, version, fitted.pipeline, holdout, label)
    promote_version(loop, today, version, reason, bootstrap=True)
    return version
