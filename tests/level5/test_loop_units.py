"""The loop's state, read back from events: the latest drift, the last retrain, the champion's
training window, the end of catching up; and the training window a retrain gets."""

from __future__ import annotations

import datetime as dt

from level5_automation.events import Event
from level5_automation.loop import (
    caught_up,
    change_point,
    last_retrain_day,
    training_window,
    window_for,
)
from level5_automation.policy import Window
from level5_automation.training import DayWindow

from .conftest import day


def _alert(on: str) -> Event:
    monitored = day(on) - dt.timedelta(days=1)
    return Event(day(on), "alert", "x", "1", {"monitored_day": monitored.isoformat()})


def test_the_change_point_is_the_first_day_of_the_latest_alert_streak() -> None:
    found = [_alert("2021-01-03"), _alert("2021-01-10"), _alert("2021-01-11"),
             _alert("2021-01-12")]
    assert change_point(found) == day("2021-01-09")
    assert change_point(found, today_alert=day("2021-01-14")) == day("2021-01-14")
    assert change_point(found, today_alert=day("2021-01-12")) == day("2021-01-09")
    assert change_point([]) is None


def test_the_last_retrain_counts_failed_attempts_and_the_champions_window_is_its_retrains() -> None:
    found = [Event(day("2020-12-31"), "retrain", "first", "1",
                   {"window": ["2020-12-03", "2020-12-30"], "bootstrap": True}),
             Event(day("2021-01-05"), "retrain", "drift", "2",
                   {"window": ["2021-01-03", "2021-01-03"], "trigger": "drift"}),
             Event(day("2021-01-07"), "error", "retrain failed", None, {"step": "retrain"}),
             Event(day("2021-01-08"), "error", "registry failed", None, {"step": "registry"})]
    assert last_retrain_day(found) == day("2021-01-07")
    assert last_retrain_day(found[:1]) == day("2020-12-31")
    assert training_window(found, "2") == DayWindow(day("2021-01-03"), day("2021-01-03"))
    assert training_window(found, "1").days == 28
    assert training_window(found, "9") is None


def test_catching_up_ends_when_a_catch_up_challenger_is_rejected() -> None:
    start = day("2021-01-03")
    found = [Event(day("2021-01-07"), "retrain", "c", "3", {"trigger": "catch-up"}),
             Event(day("2021-01-07"), "promote", "ok", "3")]
    assert not caught_up(found, start)
    found += [Event(day("2021-01-09"), "retrain", "c", "4", {"trigger": "catch-up"}),
              Event(day("2021-01-09"), "reject", "no better", "4")]
    assert caught_up(found, start)
    assert not caught_up(found, day("2021-01-20"))  # a later drift catches up afresh


def test_the_window_ends_before_the_holdout_and_never_reaches_before_the_drift() -> None:
    w = Window(days=28, holdout_days=2)
    train, holdout = window_for(w, day("2021-02-10"), None)
    assert holdout == DayWindow(day("2021-02-09"), day("2021-02-10"))
    assert train == DayWindow(day("2021-01-12"), day("2021-02-08"))
    train, _ = window_for(w, day("2021-02-10"), day("2021-02-01"))
    assert train == DayWindow(day("2021-02-01"), day("2021-02-08"))
    assert "no labelled day since the drift began on 2021-02-09" in \
        window_for(w, day("2021-02-10"), day("2021-02-09"))
    assert window_for(Window(since_drift=False), day("2021-02-10"), day("2021-02-09"))[0] == \
        DayWindow(day("2021-01-13"), day("2021-02-09"))
