"""``mlops-levels level5 run`` on real Prefect servers, on prepared data.

The data: a champion bootstrapped by the simulation, then three congested days served by the
in-process level-4 service with their actuals arriving a day later (``run_day(loop=False)``:
nothing monitored, nothing decided), so that monitoring 2021-01-05 breaks the triggers. It is
prepared once per module (about 15 s) and copied for each test.

- embedded: ``run --once`` (the ``level5-tick`` flow in this process, level 4's monitoring flow
  as a subflow) against the session's Prefect server records alert, retrain and promote, in the
  events table and as Prefect events;
- a Prefect server that does not answer: one error line, exit 2, nothing recorded;
- approval required: ``run --once`` (a subprocess) pauses; another workbook's answer leaves it
  paused; ``level5 approve`` resumes it with its answer and the run promotes; a resume with
  ``reject`` (the Prefect UI's form) leaves the champion, and the flow records the answer itself;
- team mode: its own ``prefect server start``, a process work pool, a ``prefect worker``
  subprocess; the monitor deployment alerts, the automation starts the retrain deployment, its
  run completes through the worker, all read back from the server's API.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taxi_common.settings import Settings

pytestmark = pytest.mark.slow

DAY, LABELLED = "2021-01-06", "2021-01-05"
POLICY = """\
[triggers]
min_labelled_rows = 300   # ~900 rides a day here
[window]
min_rows = 300
since_drift = false       # one labelled congested day to train on, the next as the holdout
"""
MLOPS = str(Path(sys.executable).with_name("mlops-levels"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workbook with champion v1 and 2021-01-04..06 served (congested), actuals through
    2021-01-05, nothing monitored; the policy file beside it."""
    from level5_automation.policy import load_policy
    from level5_automation.simulation import Simulation, SimulationConfig

    root = tmp_path_factory.mktemp("level5-run")
    (root / "policy.toml").write_text(POLICY)
    config = SimulationConfig(scenario="congestion", start=dt.date(2021, 1, 4), days=3,
                              onset=dt.date(2021, 1, 4), rows_per_day=800)
    sim = Simulation(config, load_policy(root / "policy.toml"), root / "prepared",
                     cache_dir=root / "cache", base_settings=Settings(workbook_home=root))
    try:
        sim.start()
        for _ in range(config.days):
            sim.run_day(loop=False)
    finally:
        sim.close()
    return root


def copy_of(prepared: Path, tmp_path: Path, approval: str = "auto") -> tuple[Path, Path]:
    """A private copy of the prepared workbook, and a policy file with ``approval``."""
    home = tmp_path / "workbook"
    shutil.copytree(prepared / "prepared", home)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + f'[approval]\nmode = "{approval}"\n')
    return home, policy


def events_of(home: Path) -> list[Any]:
    from level4_deployment.store import engine_for
    from level5_automation.events import read_events

    engine = engine_for(Settings(workbook_home=home))
    try:
        return read_events(engine)
    finally:
        engine.dispose()


def champion_of(home: Path) -> str | None:
    from level3_training.registry import alias_version, client_for

    return alias_version(client_for(Settings(workbook_home=home).tracking_uri), "champion")


def api_post(api: str, path: str, body: dict[str, Any]) -> Any:
    import httpx

    answer = httpx.post(f"{api}{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``probe`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def flow_runs(api: str, flow: str) -> list[dict[str, Any]]:
    return api_post(api, "/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}})


def environment(home: Path, api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    env.update({"WORKBOOK_HOME": str(home), "PREFECT_API_URL": api,
                "PREFECT_HOME": str(home / "prefect"), "OPENBLAS_NUM_THREADS": "2",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true", **extra})
    return env


def test_run_once_embedded_records_every_decision_as_an_event_and_a_prefect_event(
        prepared: Path, tmp_path: Path, prefect_api: str, cli: Callable[..., Any]) -> None:
    home, policy = copy_of(prepared, tmp_path)
    done = cli("run", "--once", "--policy", str(policy), "--day", DAY, "--labelled-through",
               LABELLED, env={"WORKBOOK_HOME": str(home), "PREFECT_API_URL": prefect_api})
    assert done.exit_code == 0, done.output
    kinds = [(e.kind, e.version) for e in events_of(home)]
    assert kinds[-3:] == [("alert", "1"), ("retrain", "2"), ("promote", "2")], kinds
    alert = events_of(home)[-3]
    assert alert.details["monitored_day"] == LABELLED and alert.day == dt.date(2021, 1, 6)
    assert {b["metric"] for b in alert.details["breaches"]} & {"mae_ratio", "rmse_ratio"}
    assert champion_of(home) == "2"
    assert "promote   v2" in done.output
    # the tick and level 4's monitoring are flow runs of the server; the decisions its events
    runs = flow_runs(prefect_api, "level5-tick")
    mine = [r for r in runs if r["parameters"].get("workbook_home") == str(home.resolve())]
    assert [r["state_type"] for r in mine] == ["COMPLETED"]
    monitor = [r for r in flow_runs(prefect_api, "level4-monitor")
               if r["parent_task_run_id"] and r["parameters"].get("day") == LABELLED]
    assert monitor and monitor[-1]["state_type"] == "COMPLETED"
    promoted = wait_for("the promote event in Prefect", lambda: [
        e for e in api_post(prefect_api, "/events/filter", {
            "filter": {"event": {"name": ["level5.promote"]}}, "limit": 50})["events"]
        if any(r["prefect.resource.id"].endswith(mine[0]["id"]) for r in e["related"])])
    assert promoted[0]["payload"]["version"] == "2"


def test_a_prefect_server_that_is_down_is_one_line_and_nothing_is_done(
        prepared: Path, tmp_path: Path, cli: Callable[..., Any]) -> None:
    from taxi_common.local_servers import free_port

    home, policy = copy_of(prepared, tmp_path)
    before = events_of(home)
    dead = f"http://127.0.0.1:{free_port()}/api"
    done = cli("run", "--once", "--policy", str(policy),
               env={"WORKBOOK_HOME": str(home), "PREFECT_API_URL": dead})
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Prefect API at " + dead), lines
    assert "unset PREFECT_API_URL" in lines[0]
    assert events_of(home) == before and champion_of(home) == "1"


@pytest.fixture
def paused_run(prepared: Path, tmp_path: Path,
               prefect_api: str) -> Iterator[tuple[Path, subprocess.Popen[str], dict]]:
    """``level5 run --once`` with approval required, in a subprocess, paused on v2."""
    from level5_automation.flows import pause_key, workbook_tag

    home, policy = copy_of(prepared, tmp_path, approval="required")
    log = open(tmp_path / "run.log", "w+")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [MLOPS, "level5", "run", "--once", "--policy", str(policy), "--day", DAY,
         "--labelled-through", LABELLED, "--approval-poll", "1"],
        env=environment(home, prefect_api), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        def paused() -> dict | None:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            return next((r for r in flow_runs(prefect_api, "level5-tick")
                         if r["state_type"] == "PAUSED"
                         and r["parameters"].get("workbook_home") == str(home.resolve())), None)
        run = wait_for("a paused level5-tick run", paused, timeout=120)
        assert run["state"]["state_details"]["pause_key"] == pause_key(
            Settings(workbook_home=home), "2")
        assert workbook_tag(Settings(workbook_home=home)) in run["tags"]
        assert [e.kind for e in events_of(home)][-3:] == ["alert", "retrain", "pending"]
        assert champion_of(home) == "1"
        yield home, process, run
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def test_approval_required_pauses_the_run_and_approve_resumes_it_and_promotes(
        paused_run: tuple[Path, subprocess.Popen[str], dict], prefect_api: str,
        cli: Callable[..., Any], tmp_path: Path) -> None:
    from level5_automation.run import resume_paused

    home, process, run = paused_run
    # another workbook's answer about its own v2 leaves this run alone: another folder, or
    # this folder under another WORKBOOK_ID (another pause key)
    for other in (Settings(workbook_home=tmp_path / "other", prefect_api_url=prefect_api),
                  Settings(workbook_home=home, prefect_api_url=prefect_api,
                           workbook_id="another")):
        assert resume_paused(other, "2", "reject", by="another workbook") == []
    done = cli("approve", "2", "--note", "looks right", "--day", DAY, env={
        "WORKBOOK_HOME": str(home), "PREFECT_API_URL": prefect_api})
    assert done.exit_code == 0, done.output
    assert f"resumed the paused flow run {run['name']}" in done.output
    assert process.wait(timeout=60) == 0
    found = events_of(home)
    assert [e.kind for e in found][-3:] == ["pending", "approve", "promote"]
    assert found[-2].details["review"] and "looks right" in found[-2].reason
    assert champion_of(home) == "2"
    state = api_post(prefect_api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [
        run["id"]]}}})[0]["state_type"]
    assert state == "COMPLETED"


def test_approve_finds_its_paused_run_among_pages_of_others(
        paused_run: tuple[Path, subprocess.Popen[str], dict], prefect_api: str,
        cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """More paused runs than one page of the server's answer: other versions of this
    workbook (its tag, other pause keys) and an untagged one; ``approve`` pages through them
    and resumes only its own. The other runs are deleted afterwards (the server is the
    session's)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Paused

    from level5_automation import run as level5_run
    from level5_automation.flows import pause_key, workbook_tag

    home, process, run = paused_run
    settings = Settings(workbook_home=home, prefect_api_url=prefect_api)

    @flow(name="level5-test-decoy")
    def decoy() -> None:
        """Never runs: its runs are created paused."""

    decoys = []
    with get_client(sync_client=True) as client:
        for version, tags in (("7", [workbook_tag(settings)]), ("8", [workbook_tag(settings)]),
                              ("9", [workbook_tag(settings)]), ("2", [])):
            decoys.append(client.create_flow_run(decoy, tags=tags, state=Paused(
                pause_key=pause_key(settings, version))).id)
    try:
        expected = sorted([run["id"], *map(str, decoys[:3])])
        for page in (None, 1):  # the server's page, then one run a page
            monkeypatch.setattr(level5_run, "PAUSED_PAGE", page)
            tagged = level5_run.paused_runs(workbook_tag(settings))
            assert sorted(str(r.id) for r in tagged) == expected, page
        done = cli("approve", "2", "--day", DAY, env={"WORKBOOK_HOME": str(home),
                                                       "PREFECT_API_URL": prefect_api})
        assert done.exit_code == 0, done.output
        assert f"resumed the paused flow run {run['name']}" in done.output
        assert process.wait(timeout=60) == 0
        assert champion_of(home) == "2"
        states = {r["id"]: r["state_type"] for r in api_post(prefect_api, "/flow_runs/filter", {
            "flow_runs": {"id": {"any_": [str(d) for d in decoys]}}})}
        assert list(states.values()) == ["PAUSED"] * 4, states  # the others are left alone
    finally:
        with get_client(sync_client=True) as client:
            for decoy_id in decoys:
                client.delete_flow_run(decoy_id)


def test_a_reject_from_the_resume_form_is_recorded_by_the_flow_and_the_champion_stays(
        paused_run: tuple[Path, subprocess.Popen[str], dict], prefect_api: str) -> None:
    from prefect.flow_runs import resume_flow_run

    home, process, run = paused_run
    resume_flow_run(run["id"], run_input={"decision": "reject", "by": "a reviewer in the UI",
                                          "note": "not on a Tuesday"})
    assert process.wait(timeout=60) == 0
    found = events_of(home)
    assert [e.kind for e in found][-2:] == ["pending", "reject"]
    assert "rejected by a reviewer in the UI: not on a Tuesday" == found[-1].reason
    assert champion_of(home) == "1"


def test_team_mode_the_automation_starts_the_retrain_deployment_run_by_the_worker(
        prepared: Path, tmp_path: Path) -> None:
    from level3_training.prefect_server import running_server
    from level5_automation.flows import deployment_name, workbook_tag

    home, policy = copy_of(prepared, tmp_path)
    name = deployment_name(Settings(workbook_home=home))
    with running_server(tmp_path / "server") as server:
        api = server.api_url
        env = environment(home, api, PREFECT_WORKER_QUERY_SECONDS="1",
                          PREFECT_WORKER_PREFETCH_SECONDS="0")
        (home / "prefect").mkdir(exist_ok=True)
        with open(tmp_path / "worker.log", "wb") as wlog:
            worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "level5-test",
                                       "--type", "process"], env=env, stdout=wlog,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            done = subprocess.run(
                [MLOPS, "level5", "run", "--once", "--work-pool", "level5-test", "--policy",
                 str(policy), "--day", DAY, "--labelled-through", LABELLED, "--wait", "120"],
                env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, done.stdout + done.stderr[-3000:]
            # read back from the server: the pool, the deployments, the automation, the runs
            pools = api_post(api, "/work_pools/filter", {})
            assert [p["type"] for p in pools if p["name"] == "level5-test"] == ["process"]
            automations = api_post(api, "/automations/filter", {})
            retrain_trigger = next(a for a in automations if a["name"] ==
                                   f"level5: retrain on alert ({name.rsplit('-', 1)[1]})")
            assert set(retrain_trigger["trigger"]["expect"]) == {"level5.alert",
                                                                 "level5.retrain-due"}
            monitor = flow_runs(api, "level5-monitor")
            retrain = flow_runs(api, "level5-retrain")
            assert [r["state_type"] for r in monitor] == ["COMPLETED"]
            assert [r["state_type"] for r in retrain] == ["COMPLETED"]
            assert retrain[0]["idempotency_key"].startswith(f"automation {retrain_trigger['id']}")
            assert retrain[0]["parameters"]["labelled_through"] == LABELLED
            assert retrain[0]["parameters"]["today"] == DAY
            assert monitor[0]["work_pool_name"] == retrain[0]["work_pool_name"] == "level5-test"
            tag = workbook_tag(Settings(workbook_home=home))
            assert tag in monitor[0]["tags"] and tag in retrain[0]["tags"]
            assert retrain[0]["deployment_id"] == retrain_trigger["actions"][0]["deployment_id"]
            deployments = api_post(api, "/deployments/filter", {})
            assert sorted(d["name"] for d in deployments) == [name, name]  # monitor, retrain
            assert name.startswith("taxi-duration-") and len(name) == len("taxi-duration-") + 8
        finally:
            from taxi_common.local_servers import stop_process_group

            stop_process_group(worker.pid)  # the worker before the server
    kinds = [(e.kind, e.version) for e in events_of(home)]
    assert kinds[-3:] == [("alert", "1"), ("retrain", "2"), ("promote", "2")], kinds
    assert champion_of(home) == "2"
    assert "flow run" in done.stdout and "(retrain): COMPLETED" in done.stdout
