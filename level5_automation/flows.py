"""The loop as Prefect flows: monitor → decide → retrain → evaluate → promote or reject (or wait
for a person) → watch → roll back.

- ``level5-monitor`` (:func:`monitor_flow`): level 4's monitoring flow (``level4-monitor``, a
  subflow) on the latest labelled day, against the reference of the version that served it;
  then the pending approvals, the watch (and its rollback) and the policy's triggers
  (:func:`level5_automation.loop.observe`). A trigger that fires is the ``alert`` event, which
  every recorded event also is in Prefect (``level5.alert``); a retrain due by the schedule or a
  catch-up, without an alert, is the Prefect event ``level5.retrain-due``.
- ``level5-retrain`` (:func:`retrain_flow`): the decision taken again from the stored state
  (:func:`level5_automation.loop.replan`: a duplicate start retrains nothing), the retrain on
  the window (level 2's models, level 3's search, tracking and registry), level 4's gate plus
  the policy's minimum improvement, then ``promote``, ``reject``, or — with ``approval =
  "required"`` — a **paused flow run** (``pause_flow_run(wait_for_input=ReviewInput)``) that
  ``mlops-levels level5 approve|reject VERSION`` or the Prefect UI's resume form resumes.
  Deployed, it is started by an **automation**: :func:`retrain_trigger`, a
  ``DeploymentEventTrigger`` on ``level5.alert`` and ``level5.retrain-due`` of the workbook's
  own resource.
- ``level5-tick`` (:func:`tick_flow`): both in one run, in this process (``level5 run --once``).

The steps are the plain functions of :mod:`level5_automation.loop`, one task each; the flows add
runs with their parameters, states and logs in Prefect, the automation and the pause. Every
decision is still an event in the events table, logged, and a Prefect event.

Several workbooks can share a Prefect server: the deployments (:func:`deployment_name`:
``taxi-duration-<id>``), the automation's match (the resource
``mlops-levels.level5.taxi-duration.<id>``), the pause keys (:func:`pause_key`) and the flow
runs' tag (:func:`workbook_tag`, ``workbook:<id>``) carry the workbook's id
(:func:`level5_automation.events.workbook_id`).

Importing this module imports Prefect: the CLI imports it inside ``level5 run`` after the
environment is prepared (``PREFECT_HOME``, ``PREFECT_API_URL``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.input import RunInput

from level5_automation.events import (
    Event,
    prefect_resource,
    read_events,
    resource_id,
    review,
    workbook_id,
)
from level5_automation.loop import (
    Challenger,
    Loop,
    TickResult,
    finish,
    last_labelled_day,
    observe,
    promote_step,
    record_error,
    reference_for,
    replan,
    retrain_step,
    review_pending,
)
from taxi_common.settings import Settings

#: The deployments' name without the workbook's id (:func:`deployment_name` adds it).
DEPLOYMENT_PREFIX = "taxi-duration"
MONITOR_FLOW = "level5-monitor"
RETRAIN_FLOW = "level5-retrain"
#: The Prefect events that start the retrain deployment (through the automation).
RETRAIN_EVENTS = ("level5.alert", "level5.retrain-due")
ACTOR = "level5 flow"


class ReviewInput(RunInput):
    """A person's answer to a promotion that waits (the Prefect UI's resume form)."""

    decision: Literal["approve", "reject"] = "approve"
    note: str = ""
    by: str = "the Prefect UI"


def deployment_name(settings: Settings) -> str:
    """The name of the workbook's monitor and retrain deployments, ``taxi-duration-<id>``
    (``level5-monitor/taxi-duration-<id>``, ``level5-retrain/taxi-duration-<id>``)."""
    return f"{DEPLOYMENT_PREFIX}-{workbook_id(settings)}"


def workbook_tag(settings: Settings) -> str:
    """The tag of the workbook's flow runs, ``workbook:<id>``: its deployments carry it, an
    embedded tick runs under it, and ``level5 approve`` looks for paused runs by it (the
    Prefect UI filters by it too)."""
    return f"workbook:{workbook_id(settings)}"


def pause_key(settings: Settings, version: str) -> str:
    """The key of the pause of a promotion of ``version`` in ``settings``' workbook,
    ``level5-approve-<id>-v<N>`` (how ``level5 approve`` finds it)."""
    return f"level5-approve-{workbook_id(settings)}-v{version}"


# --- the loop of a flow run ------------------------------------------------------------------

def make_loop(policy_path: str | None, workbook_home: str | None) -> Loop:
    """The loop a flow run works with: settings from its environment (a worker's: its
    ``WORKBOOK_HOME``, ``DATABASE_URL``, ``MLFLOW_TRACKING_URI``; ``workbook_home`` wins), the
    tables, the policy file (default: the shipped one)."""
    from level3_training.runtime import apply_environment_defaults
    from level4_deployment.store import create_tables, engine_for
    from level5_automation.events import create_events_table
    from level5_automation.policy import load_policy

    settings = Settings.from_env()
    if workbook_home:
        settings = settings.with_home(Path(workbook_home))
    apply_environment_defaults(settings)
    engine = engine_for(settings)
    create_tables(engine)
    create_events_table(engine)
    policy = load_policy(Path(policy_path) if policy_path else None)
    return Loop(settings, engine, policy, actor=ACTOR)


def _days(loop: Loop, today: str | None, labelled_through: str | None
          ) -> tuple[dt.date, dt.date | None]:
    """The tick's day (default: today) and the labelled-through day (default: the latest
    day with actuals)."""
    day = dt.date.fromisoformat(today) if today else dt.date.today()
    labelled = (dt.date.fromisoformat(labelled_through) if labelled_through
                else last_labelled_day(loop.engine))
    return day, labelled


def summary(result: TickResult, *, monitored: str | None = None) -> dict[str, Any]:
    """What a flow run returns: the day, the decision, the champion, the events."""
    decision = result.decision
    return {"day": result.day.isoformat(), "monitored_day": monitored,
            "retrain": bool(decision and decision.retrain and not result.rolled_back),
            "trigger": decision.trigger if decision else None,
            "reason": decision.reason if decision else None,
            "champion": result.champion, "aborted": result.aborted,
            "events": [e.as_dict() for e in result.events]}


# --- tasks: the loop's steps -----------------------------------------------------------------

@task(name="observe", cache_policy=NO_CACHE)
def observe_task(loop: Loop, today: dt.date, labelled_through: dt.date) -> TickResult:
    """Pending approvals, the watch, the triggers, the decision."""
    return observe(loop, today, labelled_through)


@task(name="replan", cache_policy=NO_CACHE)
def replan_task(loop: Loop, today: dt.date, labelled_through: dt.date) -> TickResult:
    """The decision again, from the stored state."""
    return replan(loop, today, labelled_through)


@task(name="retrain", cache_policy=NO_CACHE)
def retrain_task(loop: Loop, today: dt.date, result: TickResult) -> Challenger | None:
    """Fit the challenger on the window, register it as ``@challenger``."""
    return retrain_step(loop, today, result)


@task(name="evaluate-and-promote", cache_policy=NO_CACHE)
def evaluate_task(loop: Loop, today: dt.date, result: TickResult,
                  challenger: Challenger) -> Event | None:
    """Level 4's gate on the holdout plus the minimum improvement; promote, reject, or pend."""
    return promote_step(loop, today, result, challenger)


@task(name="review-pending", cache_policy=NO_CACHE)
def review_task(loop: Loop, today: dt.date) -> list[Event]:
    """Promote an approved version (the answer is in the events table)."""
    return review_pending(loop, today)


def monitor_labelled_day(loop: Loop, today: dt.date, labelled_through: dt.date,
                         config_path: str | None) -> None:
    """Level 4's monitoring flow, as a subflow, on ``labelled_through``; a failure is an
    ``error`` event (the loop goes on with the metrics it has)."""
    from level4_deployment.flows import monitor_flow as level4_monitor

    try:
        level4_monitor(reference_path=str(reference_for(loop, labelled_through)),
                       day=labelled_through.isoformat(), config_path=config_path, by="pickup",
                       workbook_home=str(loop.settings.workbook_home))
    except Exception as exc:  # noqa: BLE001 - monitoring failed: the loop goes on
        record_error(loop, today, "monitoring", exc, None)


def await_review(loop: Loop, today: dt.date, pending: Event, poll_seconds: int) -> list[Event]:
    """Pause this flow run until a person answers the promotion of ``pending``'s version
    (``level5 approve|reject VERSION`` records the answer and resumes the run with it; the
    Prefect UI's form resumes it too); then record the answer if it is not in the events table
    yet, and promote an approved version. Unanswered within ``[approval] timeout_days`` the run
    stops waiting, and the next tick rejects the version."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    logger = get_run_logger()
    version = str(pending.version)
    days = loop.policy.approval.timeout_days or 365
    logger.info("v%s passed the promotion rule and waits for a person: mlops-levels level5 "
                "approve %s (or reject), or the resume form in the Prefect UI", version, version)
    try:
        answer = pause_flow_run(wait_for_input=ReviewInput, timeout=days * 86_400,
                                poll_interval=poll_seconds,
                                key=pause_key(loop.settings, version))
    except FlowPauseTimeout:
        logger.warning("no answer for v%s within %d days", version, days)
        return []
    answered = [e for e in read_events(loop.engine, version=version)
                if e.kind in ("approve", "reject") and (e.id or 0) > (pending.id or 0)]
    if not answered:  # resumed from the UI: the answer goes into the events table here
        review(loop.engine, version, answer.decision, day=today, actor=answer.by,
               note=answer.note, settings=loop.settings)
    return review_task(loop, today)


def _retrain_and_promote(loop: Loop, today: dt.date, result: TickResult,
                         poll_seconds: int) -> None:
    challenger = retrain_task(loop, today, result)
    if challenger is None:
        return
    event = evaluate_task(loop, today, result, challenger)
    if event is not None and event.kind == "pending":
        result.events.extend(await_review(loop, today, event, poll_seconds))


# --- flows -----------------------------------------------------------------------------------

@flow(name=MONITOR_FLOW)
def monitor_flow(today: str | None = None, labelled_through: str | None = None,
                 policy_path: str | None = None, workbook_home: str | None = None,
                 config_path: str | None = None) -> dict[str, Any]:
    """Monitor the latest labelled day (level 4's flow), then the approvals, the watch and the
    triggers. An alert is the Prefect event ``level5.alert``; a retrain due without one
    (schedule, catch-up) is ``level5.retrain-due``: the automation on the retrain deployment
    starts it."""
    logger = get_run_logger()
    loop = make_loop(policy_path, workbook_home)
    try:
        day, labelled = _days(loop, today, labelled_through)
        if labelled is None:
            logger.info("no actuals yet: nothing to monitor")
            return summary(TickResult(day))
        monitor_labelled_day(loop, day, labelled, config_path)
        result = observe_task(loop, day, labelled)
        out = summary(result, monitored=labelled.isoformat())
        alerted = any(e.kind == "alert" for e in result.events)
        if out["retrain"] and not alerted:
            emit_event(event="level5.retrain-due", resource=prefect_resource(loop.settings),
                       payload={"day": day.isoformat(), "kind": "retrain-due",
                                "details": {"monitored_day": labelled.isoformat(),
                                            "trigger": out["trigger"]},
                                "reason": out["reason"]})
        logger.info("%s (labelled through %s): %s", day, labelled, out["reason"])
        return out
    finally:
        loop.engine.dispose()


@flow(name=RETRAIN_FLOW)
def retrain_flow(today: str | None = None, labelled_through: str | None = None,
                 policy_path: str | None = None, workbook_home: str | None = None,
                 approval_poll_seconds: int = 10) -> dict[str, Any]:
    """Retrain if the policy still says so (the decision taken again from the stored state),
    judge the challenger, promote, reject, or pause until a person answers."""
    logger = get_run_logger()
    loop = make_loop(policy_path, workbook_home)
    try:
        day, labelled = _days(loop, today, labelled_through)
        if labelled is None:
            return summary(TickResult(day))
        result = replan_task(loop, day, labelled)
        _retrain_and_promote(loop, day, result, approval_poll_seconds)
        result = finish(loop, day, result)
        logger.info("%s: %s; champion v%s", day, result.decision.reason if result.decision
                    else "nothing decided", result.champion)
        return summary(result, monitored=labelled.isoformat())
    finally:
        loop.engine.dispose()


@flow(name="level5-tick")
def tick_flow(today: str | None = None, labelled_through: str | None = None,
              policy_path: str | None = None, workbook_home: str | None = None,
              config_path: str | None = None, approval_poll_seconds: int = 10
              ) -> dict[str, Any]:
    """One whole tick in this process: level 4's monitoring, the approvals, the watch, the
    triggers, then the retrain, the rule and the promotion (or the pause for approval)."""
    loop = make_loop(policy_path, workbook_home)
    try:
        day, labelled = _days(loop, today, labelled_through)
        if labelled is None:
            get_run_logger().info("no actuals yet: nothing to monitor")
            return summary(TickResult(day))
        monitor_labelled_day(loop, day, labelled, config_path)
        result = observe_task(loop, day, labelled)
        _retrain_and_promote(loop, day, result, approval_poll_seconds)
        return summary(finish(loop, day, result), monitored=labelled.isoformat())
    finally:
        loop.engine.dispose()


# --- deployments -----------------------------------------------------------------------------

def retrain_trigger(settings: Settings) -> DeploymentEventTrigger:
    """The automation that starts the workbook's retrain deployment: any ``level5.alert`` or
    ``level5.retrain-due`` event of the workbook's resource (not another workbook's), with the
    event's day and monitored day as the run's parameters."""
    return DeploymentEventTrigger(
        name=f"level5: retrain on alert ({workbook_id(settings)})",
        description="mlops-levels level 5: an alert (or a retrain due) of the workbook "
                    f"{settings.workbook_home} starts its retrain",
        expect=set(RETRAIN_EVENTS),
        match={"prefect.resource.id": resource_id(settings)},
        posture="Reactive", threshold=1,
        parameters={"today": "{{ event.payload.day }}",
                    "labelled_through": "{{ event.payload.details.monitored_day }}"})


def flow_parameters(settings: Settings, policy_path: str | None) -> dict[str, Any]:
    """The parameters every deployed run gets: the policy file and the workbook folder."""
    return {"policy_path": policy_path, "workbook_home": str(settings.workbook_home)}
