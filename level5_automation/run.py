"""``mlops-levels level5 run``: the loop's flows on a real Prefect server.

- The server: ``PREFECT_API_URL`` when set (it must answer: otherwise one error line and
  nothing is done), else the background server recorded under ``WORKBOOK_HOME`` (level 3's
  ``level3 server start``), else one is started in the background and recorded there.
- The names: the deployments are ``level5-monitor/taxi-duration-<id>`` and
  ``level5-retrain/taxi-duration-<id>``, ``<id>`` the workbook's
  (:func:`level5_automation.events.workbook_id`), and the automation matches only that
  workbook's events: several workbooks share a server without starting each other's runs.
- Embedded (no ``--work-pool``): the monitor and retrain deployments are served in this process
  (``prefect.serve``): the monitor on a cron schedule, the retrain started by the automation
  on ``level5.alert`` / ``level5.retrain-due``. ``--once``: one tick (``level5-tick``) runs here
  and the command exits.
- Team (``--work-pool NAME``): the same deployments are deployed to a process work pool (created
  if missing) from this project's folder, and run by ``prefect worker start --pool NAME``;
  the automation starts the retrain deployment. ``--once``: the monitor deployment is run now
  through the worker, and the command waits for the retrain run the automation started (if
  any) to finish or to pause for approval.

Nothing here is imported by ``mlops-levels --help``; Prefect is imported after the environment
is prepared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxi_common.errors import WorkbookError
from taxi_common.settings import Settings

#: The project folder the deployments load their flows from (the worker must see it too).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLOWS_FILE = "level5_automation/flows.py"
DEFAULT_CRON = "0 6 * * *"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class RunError(WorkbookError):
    """A run that cannot go on (a flow run that failed, a wait that timed out)."""


def choose_server(settings: Settings, *, start: bool = True,
                  echo: Callable[[str], None] = print) -> str:
    """The Prefect API to use: ``settings``' ``PREFECT_API_URL`` (it must answer), the
    background server recorded under ``WORKBOOK_HOME``, or a new background one."""
    from level3_training.prefect_server import recorded_server, start_server, write_record
    from level3_training.runtime import check_reachable

    if settings.prefect_api_url:
        check_reachable(f"{settings.prefect_api_url.rstrip('/')}/health", "the Prefect API",
                        "start it (prefect server start, or mlops-levels level3 server start) "
                        "or unset PREFECT_API_URL")
        return settings.prefect_api_url
    record = recorded_server(settings.prefect_home)
    if record is not None:
        return str(record["api_url"])
    if not start:
        raise WorkbookError("no Prefect server: set PREFECT_API_URL or run `mlops-levels level3 "
                            "server start`")
    echo("starting a background Prefect server under WORKBOOK_HOME (5-15 s; stop it with "
         "`mlops-levels level3 server stop`)")
    server = start_server(settings.prefect_home)
    write_record(server, settings.prefect_home)
    return server.api_url


def prepare(settings: Settings, api_url: str) -> Settings:
    """Level 3's environment (PREFECT_HOME under WORKBOOK_HOME, no telemetry, ...), the Prefect
    API in ``os.environ`` and in Prefect's settings; the settings with that API."""
    from dataclasses import replace

    from level3_training.runtime import prepare_environment

    settings = replace(settings, prefect_api_url=api_url)
    prepare_environment(settings)
    os.environ["PREFECT_API_URL"] = api_url
    return settings


def job_environment(settings: Settings) -> dict[str, str]:
    """What a worker's flow-run process needs in its environment to use the same folder,
    database and tracking store as this command, and the same workbook id (``WORKBOOK_ID``,
    as derived here: a worker whose path to the folder differs still emits this workbook's
    events)."""
    from level3_training.runtime import environment_defaults, settings_variables
    from level5_automation.events import workbook_id

    env = {k: v for k, v in settings_variables(settings).items() if v}
    env.update(environment_defaults(settings))
    env["WORKBOOK_ID"] = workbook_id(settings)
    return env


@dataclass
class RunSummary:
    """What ``run`` did: the flow runs (name, state) and the loop's events of this run."""

    flow_runs: list[dict[str, Any]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    waiting: str | None = None  # a version waiting for approval in a paused run


def ensure_work_pool(name: str) -> None:
    """Create the process work pool ``name`` unless it exists (``prefect work-pool create NAME
    --type process``); a pool of another type is an error."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return
    if pool.type != "process":
        raise WorkbookError(f"work pool {name!r} is of type {pool.type!r}: level 5 deploys to a "
                            "process pool; choose another --work-pool")


def deploy(settings: Settings, policy_path: str | None, pool: str, *,
           cron: str | None) -> dict[str, Any]:
    """Deploy the monitor (on ``cron``, if any) and the retrain (started by the automation) to
    the process pool ``pool``, loading the flows from this project's folder; their ids."""
    from prefect import flow as prefect_flow

    from level5_automation.flows import (
        deployment_name,
        flow_parameters,
        retrain_trigger,
        workbook_tag,
    )

    name = deployment_name(settings)
    ensure_work_pool(pool)
    common = {"work_pool_name": pool, "job_variables": {"env": job_environment(settings)},
              "tags": [workbook_tag(settings)],
              "parameters": flow_parameters(settings, policy_path), "print_next_steps": False,
              "build": False, "push": False, "ignore_warnings": True}
    monitor = prefect_flow.from_source(source=str(PROJECT_ROOT),
                                       entrypoint=f"{FLOWS_FILE}:monitor_flow")
    retrain = prefect_flow.from_source(source=str(PROJECT_ROOT),
                                       entrypoint=f"{FLOWS_FILE}:retrain_flow")
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints a table per deploy
        return {"monitor": monitor.deploy(name=name, cron=cron, **common),
                "retrain": retrain.deploy(name=name, triggers=[retrain_trigger(settings)],
                                          **common)}


def serve(settings: Settings, policy_path: str | None, *, cron: str) -> None:
    """Serve the monitor (on ``cron``) and the retrain (automation) deployments in this
    process until interrupted."""
    from prefect import serve as prefect_serve

    from level5_automation.flows import (
        deployment_name,
        flow_parameters,
        monitor_flow,
        retrain_flow,
        retrain_trigger,
        workbook_tag,
    )

    name, parameters = deployment_name(settings), flow_parameters(settings, policy_path)
    tags = [workbook_tag(settings)]
    prefect_serve(monitor_flow.to_deployment(name=name, cron=cron, parameters=parameters,
                                             tags=tags),
                  retrain_flow.to_deployment(name=name, triggers=[retrain_trigger(settings)],
                                             parameters=parameters, tags=tags))


def run_once_embedded(settings: Settings, policy_path: str | None, *, today: str | None,
                      labelled_through: str | None, poll_seconds: int) -> dict[str, Any]:
    """One tick as one flow run (``level5-tick``, tagged with the workbook) in this process;
    its summary."""
    from prefect import tags

    from level5_automation.flows import tick_flow, workbook_tag

    with tags(workbook_tag(settings)):
        return tick_flow(today=today, labelled_through=labelled_through,
                         policy_path=policy_path, workbook_home=str(settings.workbook_home),
                         approval_poll_seconds=poll_seconds)


def _state(run: Any) -> str:
    return run.state.type.value if run.state is not None else "UNKNOWN"


def run_once_team(settings: Settings, policy_path: str | None, pool: str, *,
                  today: str | None, labelled_through: str | None, poll_seconds: int,
                  wait_seconds: float) -> RunSummary:
    """Deploy, run the monitor deployment now through the pool's worker and wait for it; if
    the policy then says retrain, wait for the run the automation started (until it ends or
    pauses for approval)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment

    from level5_automation.flows import make_loop

    ids = deploy(settings, policy_path, pool, cron=None)
    loop = make_loop(policy_path, str(settings.workbook_home))
    started = dt.datetime.now(dt.UTC)
    first_event = max([e.id or 0 for e in _events(loop)], default=0)
    parameters = {"today": today, "labelled_through": labelled_through}
    out = RunSummary()
    monitor = run_deployment(ids["monitor"], parameters=parameters, timeout=wait_seconds,
                             poll_interval=1)
    out.flow_runs.append({"name": monitor.name, "flow": "monitor", "state": _state(monitor),
                          "id": str(monitor.id)})
    if _state(monitor) != "COMPLETED":
        raise RunError(f"the monitor flow run {monitor.name} ended {_state(monitor)} (is a "
                       f"worker running? prefect worker start --pool {pool})")
    out.events = [e for e in _events(loop) if (e.id or 0) > first_event]
    from level5_automation.loop import replan

    day = dt.date.fromisoformat(today) if today else dt.date.today()
    labelled = next((e.details.get("monitored_day") for e in out.events if e.kind == "alert"),
                    labelled_through)
    wants_retrain = any(e.kind == "alert" for e in out.events)
    if not wants_retrain and labelled:
        decision = replan(loop, day, dt.date.fromisoformat(labelled)).decision
        wants_retrain = bool(decision and decision.retrain)
    if wants_retrain:
        deadline = time.monotonic() + wait_seconds
        retrain = None
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[ids["retrain"]])))
                    if r.created and r.created >= started]
                retrain = runs[0] if runs else None
                if retrain is not None and (_state(retrain) in TERMINAL
                                            or _state(retrain) == "PAUSED"):
                    break
                time.sleep(1)
        if retrain is None:
            raise RunError(f"the automation started no retrain run within {wait_seconds:.0f} s")
        out.flow_runs.append({"name": retrain.name, "flow": "retrain", "state": _state(retrain),
                              "id": str(retrain.id)})
        if _state(retrain) not in TERMINAL + ("PAUSED",):
            raise RunError(f"the retrain flow run {retrain.name} is still {_state(retrain)} "
                           f"after {wait_seconds:.0f} s")
        if _state(retrain) == "PAUSED":
            key = retrain.state.state_details.pause_key or ""
            out.waiting = key.rsplit("-v", 1)[-1] or None
    out.events = [e for e in _events(loop) if (e.id or 0) > first_event]
    loop.engine.dispose()
    return out


def _events(loop: Any) -> list[Any]:
    from level5_automation.events import read_events

    return read_events(loop.engine)


#: Flow runs read per request by :func:`paused_runs` (None: the server's page, 200 unless
#: its ``PREFECT_SERVER_API_DEFAULT_LIMIT`` says otherwise; asking for more would be refused).
PAUSED_PAGE: int | None = None


def paused_runs(tag: str) -> list[Any]:
    """Every paused flow run tagged ``tag`` on the configured Prefect server, read a page at a
    time (``PAUSED_PAGE``) in the order of their ids (a stable order to page in) until a page
    comes back empty."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        tags=FlowRunFilterTags(all_=[tag]))
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(flow_run_filter=paused, sort=FlowRunSort.ID_DESC,
                                         limit=PAUSED_PAGE, offset=len(runs))
            if not page:
                return runs
            runs.extend(page)


def resume_paused(settings: Settings, version: str, decision: str, *, by: str,
                  note: str = "") -> list[str]:
    """Resume the paused flow runs waiting for an answer about ``version`` of this workbook
    with ``decision`` (Prefect's ``resume_flow_run(run_id, run_input=...)``); their names.
    A run is this workbook's when it carries the workbook's tag, its pause key the workbook's
    id and its ``workbook_home`` parameter is this folder: another workbook's paused run on the
    same server is left alone. The server filters by state and tag, and is read page by page
    (it answers at most 200 runs a request by default), all pages before any run is
    resumed. Nothing is asked of Prefect when no server is configured or recorded."""
    from level3_training.prefect_server import recorded_server

    api = settings.prefect_api_url
    if not api:
        record = recorded_server(settings.prefect_home)
        api = str(record["api_url"]) if record else None
    if not api:
        return []
    prepare(settings, api)
    from prefect.flow_runs import resume_flow_run

    from level5_automation.flows import pause_key, workbook_tag

    runs = paused_runs(workbook_tag(settings))
    home = str(settings.workbook_home)
    resumed = []
    for run in runs:
        if (run.state is None
                or run.state.state_details.pause_key != pause_key(settings, version)
                or str(Path(run.parameters.get("workbook_home") or "").resolve()) != home):
            continue
        resume_flow_run(run.id, run_input={"decision": decision, "by": by, "note": note})
        resumed.append(run.name)
    return resumed
