"""The events table on SQLite and PostgreSQL, pending approvals and their answers, the commands
that read and answer them, and the Prefect events (only when a Prefect API is configured)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from level4_deployment.store import engine_for
from level5_automation.events import (
    Event,
    create_events_table,
    pending_approvals,
    read_events,
    record_event,
    review,
)
from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

D1, D2, D3 = dt.date(2021, 2, 1), dt.date(2021, 2, 2), dt.date(2021, 2, 3)


def test_events_are_stored_with_reason_and_details_and_read_back_in_order(
        engine: Engine) -> None:
    record_event(engine, Event(D2, "retrain", "drift: mae_ratio 1.3 > 1.12", "2",
                               {"window": ["2021-01-20", "2021-02-01"], "rows": 1951}))
    record_event(engine, Event(D1, "alert", "mae_ratio 1.3 > 1.12", "1",
                               {"breaches": [{"metric": "mae_ratio", "value": 1.3}]}))
    record_event(engine, Event(D2, "promote", "promotion rule passed", "2"))
    found = read_events(engine)
    assert [(e.day, e.kind, e.version) for e in found] == [
        (D1, "alert", "1"), (D2, "retrain", "2"), (D2, "promote", "2")]
    assert found[1].details == {"window": ["2021-01-20", "2021-02-01"], "rows": 1951}
    assert found[1].as_dict() == {"date": "2021-02-02", "kind": "retrain", "version": "2",
                                  "reason": "drift: mae_ratio 1.3 > 1.12",
                                  "details": found[1].details}
    assert [e.kind for e in read_events(engine, kinds=["promote"])] == ["promote"]
    assert [e.kind for e in read_events(engine, since=D2, until=D2, version="2")] == \
        ["retrain", "promote"]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="event kind 'promoted' is not one of"):
        Event(D1, "promoted", "x")


def test_a_pending_promotion_waits_until_approved_then_promoted_or_rejected(
        engine: Engine) -> None:
    record_event(engine, Event(D1, "pending", "rule passed", "2", {"champion": "1"}))
    record_event(engine, Event(D1, "pending", "rule passed", "3", {"champion": "1"}))
    assert [p.version for p in pending_approvals(engine)] == ["2", "3"]
    with pytest.raises(BadInputError, match=r"version 7 is not waiting for approval "
                                            r"\(waiting: v2, v3\)"):
        review(engine, "7", "approve", day=D2)

    approve = review(engine, "v2", "approve", day=D2, actor="ana", note="looks right")
    assert (approve.kind, approve.version, approve.reason) == ("approve", "2",
                                                               "approved by ana: looks right")
    waiting = {p.version: p for p in pending_approvals(engine)}
    assert waiting["2"].approval is not None and waiting["3"].approval is None
    with pytest.raises(BadInputError, match=r"waiting: v3"):
        review(engine, "2", "approve", day=D2)  # already answered: the loop acts next

    review(engine, "3", "reject", day=D2, actor="ana")
    record_event(engine, Event(D3, "promote", "approved", "2"))  # what the loop then does
    assert pending_approvals(engine) == []


def test_the_commands_list_and_answer_events(cli: Callable[..., Any], tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    engine = engine_for(Settings(workbook_home=home))
    create_events_table(engine)
    record_event(engine, Event(D1, "pending", "rule passed (RMSE 7.2 vs 7.9)", "4"))
    engine.dispose()

    assert cli("events").output.strip() == "no events recorded yet"
    listed = cli("events", "--home", str(home))
    assert "2021-02-01  pending   v4    rule passed (RMSE 7.2 vs 7.9)" in listed.output
    wrong = cli("approve", "5", "--home", str(home))
    assert wrong.exit_code == 2
    assert wrong.output.strip() == ("error: version 5 is not waiting for approval (waiting: "
                                    "v4); see `mlops-levels level5 events`")
    answered = cli("reject", "4", "--home", str(home), "--day", "2021-02-02", "--note", "no")
    assert answered.exit_code == 0, answered.output
    assert "the champion stays" in answered.output
    rows = json.loads(cli("events", "--home", str(home), "--json").output)
    assert [(r["date"], r["kind"], r["version"]) for r in rows] == [
        ("2021-02-01", "pending", "4"), ("2021-02-02", "reject", "4")]
    assert rows[1]["reason"].endswith(": no")
    assert cli("events", "--kind", "promoted").exit_code == 2


def test_without_a_prefect_api_no_event_goes_to_prefect_and_prefect_is_not_imported(
        tmp_path: Path) -> None:
    code = ("import sys, datetime as dt\n"
            "from level4_deployment.store import engine_for\n"
            "from level5_automation.events import Event, create_events_table, record_event\n"
            "from taxi_common.settings import Settings\n"
            f"s = Settings(workbook_home=__import__('pathlib').Path({str(tmp_path)!r}))\n"
            "e = engine_for(s); create_events_table(e)\n"
            "record_event(e, Event(dt.date(2021, 2, 1), 'promote', 'x', '2'), settings=s)\n"
            "print('prefect' in sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_with_a_prefect_api_every_event_is_a_prefect_event(
        prefect_api: str, tmp_path: Path) -> None:
    import httpx

    from level5_automation.events import flush_prefect_events, workbook_id

    settings = Settings(workbook_home=tmp_path, prefect_api_url=prefect_api)
    engine = engine_for(settings)
    create_events_table(engine)
    record_event(engine, Event(D2, "rollback", "watch: live RMSE 9.1 vs 7.2", "3",
                               {"rolled_back": "4"}), settings=settings)
    flush_prefect_events()
    deadline = time.monotonic() + 30
    found: list[dict] = []
    while time.monotonic() < deadline and not found:
        answer = httpx.post(f"{prefect_api}/events/filter", json={
            "filter": {"event": {"name": ["level5.rollback"]}}, "limit": 10}, timeout=10)
        answer.raise_for_status()
        found = answer.json()["events"]
        time.sleep(0.5)
    assert found, "the rollback did not reach Prefect's event API"
    event = found[0]
    assert event["resource"]["prefect.resource.id"] == (
        f"mlops-levels.level5.taxi-duration.{workbook_id(settings)}")
    assert event["resource"]["mlops-levels.workbook-home"] == str(tmp_path)
    assert event["payload"]["day"] == "2021-02-02" and event["payload"]["version"] == "3"
    assert event["payload"]["reason"] == "watch: live RMSE 9.1 vs 7.2"
    assert event["related"][0]["prefect.resource.id"].endswith(".version.3")
