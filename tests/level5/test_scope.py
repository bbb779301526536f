"""Several workbooks on one Prefect server: each has its own id, resource, deployments,
automation and pause keys, and an alert of one starts only its own retrain deployment.

- the id: 8 hex digits of the SHA-256 of the resolved ``WORKBOOK_HOME`` (the same folder, however
  spelled, gives the same id; another folder, a copy included, another one), or ``WORKBOOK_ID``;
- on the session's Prefect server: two workbooks deploy (``run.deploy``, the retrain with its
  trigger) to a process pool without a worker; an ``alert`` recorded in workbook A makes the
  automation create a (scheduled) flow run of A's retrain deployment and none of B's, then one
  of B makes B's. Everything the test created on the server is deleted afterwards.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from level5_automation.events import resource_id, workbook_id
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings


def test_two_workbook_homes_have_two_ids_and_one_home_always_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    first = workbook_id(Settings(workbook_home=a))
    assert len(first) == 8 and int(first, 16) >= 0
    assert workbook_id(Settings(workbook_home=b)) != first
    assert workbook_id(Settings(workbook_home=a)) == first  # deterministic
    assert workbook_id(Settings(workbook_home=b / ".." / "a")) == first  # the resolved path
    monkeypatch.chdir(tmp_path)
    assert workbook_id(Settings.from_env({"WORKBOOK_HOME": "a"})) == first
    assert resource_id(Settings(workbook_home=a)) == f"mlops-levels.level5.taxi-duration.{first}"


def test_workbook_id_names_the_workbook_and_a_wrong_one_is_an_error(tmp_path: Path) -> None:
    named = Settings.from_env({"WORKBOOK_HOME": str(tmp_path), "WORKBOOK_ID": "team-alice"})
    assert named.workbook_id == "team-alice" and workbook_id(named) == "team-alice"
    for wrong in ("Alice", "a/b", "-x", "a" * 33, "a.b"):
        with pytest.raises(BadInputError, match="WORKBOOK_ID"):
            workbook_id(Settings(workbook_home=tmp_path, workbook_id=wrong))


def test_names_deployments_trigger_and_pause_keys_carry_the_workbook_id(tmp_path: Path) -> None:
    from level5_automation.flows import deployment_name, pause_key, retrain_trigger
    from level5_automation.run import job_environment

    a, b = Settings(workbook_home=tmp_path / "a"), Settings(workbook_home=tmp_path / "b")
    ida, idb = workbook_id(a), workbook_id(b)
    assert deployment_name(a) == f"taxi-duration-{ida}" != deployment_name(b)
    assert pause_key(a, "3") == f"level5-approve-{ida}-v3" != pause_key(b, "3")
    trigger = retrain_trigger(a)
    assert trigger.match.model_dump() == {
        "prefect.resource.id": f"mlops-levels.level5.taxi-duration.{ida}"}
    assert trigger.name == f"level5: retrain on alert ({ida})"
    assert retrain_trigger(b).match.model_dump()["prefect.resource.id"].endswith(idb)
    # a worker's flow-run process gets the deployer's id, whatever its path to the folder
    assert job_environment(a)["WORKBOOK_ID"] == ida


def test_a_wrong_workbook_id_stops_level5_run_in_one_line(cli: Callable[..., Any]) -> None:
    done = cli("run", "--once", env={"WORKBOOK_ID": "Not An Id"})
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: WORKBOOK_ID 'Not An Id'"), lines


def _retrain_runs(client: Any, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(
        id=DeploymentFilterId(any_=[deployment_id])))


def _alert(settings: Settings, day: dt.date) -> None:
    """An ``alert`` recorded in the workbook of ``settings`` (and so sent to its Prefect)."""
    from level4_deployment.store import engine_for
    from level5_automation.events import (
        Event,
        create_events_table,
        flush_prefect_events,
        record_event,
    )

    engine = engine_for(settings)
    try:
        create_events_table(engine)
        record_event(engine, Event(day, "alert", "test: rmse_ratio 1.4 > 1.2", "1", {
            "monitored_day": (day - dt.timedelta(days=1)).isoformat()}), settings=settings)
    finally:
        engine.dispose()
    flush_prefect_events()


def _wait_for_runs(client: Any, deployment_id: Any, timeout: float = 20.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _retrain_runs(client, deployment_id)
        if runs:
            return runs
        time.sleep(0.5)
    raise AssertionError(f"no flow run of deployment {deployment_id} within {timeout:.0f} s")


@pytest.mark.slow
def test_an_alert_of_one_workbook_starts_only_its_own_retrain_deployment(
        prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from level5_automation.flows import deployment_name
    from level5_automation.run import deploy

    settings = {name: Settings(workbook_home=(tmp_path / name).resolve(),
                               prefect_api_url=prefect_api) for name in ("a", "b")}
    days = {"a": dt.date(2021, 1, 6), "b": dt.date(2021, 2, 6)}
    pool = f"level5-scope-{uuid.uuid4().hex[:8]}"  # no worker: the runs stay scheduled
    ids: dict[str, dict[str, Any]] = {}
    with get_client(sync_client=True) as client:
        try:
            for name, s in settings.items():
                ids[name] = deploy(s, None, pool, cron=None)
            deployments = {name: client.read_deployment(ids[name]["retrain"])
                           for name in settings}
            for name, s in settings.items():
                assert deployments[name].name == deployment_name(s)
                assert deployments[name].job_variables["env"]["WORKBOOK_ID"] == workbook_id(s)
            assert deployments["a"].name != deployments["b"].name
            automations = {name: client.read_resource_related_automations(
                f"prefect.deployment.{ids[name]['retrain']}") for name in settings}
            for name, s in settings.items():
                assert [a.trigger.match.model_dump() for a in automations[name]] == [
                    {"prefect.resource.id": resource_id(s)}]

            _alert(settings["a"], days["a"])
            runs_a = _wait_for_runs(client, ids["a"]["retrain"])
            assert [r.parameters["today"] for r in runs_a] == [days["a"].isoformat()]
            assert runs_a[0].state_type.value == "SCHEDULED"  # created by the automation
            assert runs_a[0].idempotency_key.startswith(f"automation {automations['a'][0].id}")
            _alert(settings["b"], days["b"])
            runs_b = _wait_for_runs(client, ids["b"]["retrain"])
            # B's automation ignored A's alert: its only run is of its own alert
            assert [r.parameters["today"] for r in runs_b] == [days["b"].isoformat()]
            assert [r.parameters["workbook_home"] for r in runs_b] == [
                str(settings["b"].workbook_home)]
            # and A's ignored B's (given as long as B's took, and 3 s more, to react)
            settle = time.monotonic() + 3
            while time.monotonic() < settle:
                assert [r.parameters["today"] for r in _retrain_runs(
                    client, ids["a"]["retrain"])] == [days["a"].isoformat()]
                time.sleep(0.5)
        finally:
            for deployment in ids.values():
                for run in _retrain_runs(client, deployment["retrain"]):
                    client.delete_flow_run(run.id)
                client.delete_resource_owned_automations(
                    f"prefect.deployment.{deployment['retrain']}")
                for which in ("monitor", "retrain"):
                    client.delete_deployment(deployment[which])
            if ids:
                client.delete_work_pool(pool)
