"""``mlops-levels compare``: the same simulated period operated the way of each level.

Every level runs level 5's simulation machinery (:mod:`level5_automation.simulation`) over the
same synthetic days, the same drift and the same first champion; what differs is how the served
model gets replaced — the level's way of operating:

- **L1**: a notebook model handed over as a bare pickle. Nobody watches the model: users
  complain once the estimates have been wrong for ``complaint_after_days`` days; a person
  retrains in the notebook and hands the file over ``notebook_handover_days`` later.
- **L2**: the same model served, saved by level 2's model store with its metadata; after the
  complaint a person retrains by command and restarts the service ``retrain_command_days`` later.
- **L3**: level 3's pipeline retrains on a schedule (``retrain_every_days``) and registers a
  challenger; a person reviews and approves it ``promotion_review_days`` later (the loop's
  ``approval = "required"`` with a scripted reviewer).
- **L4**: level 4's daily monitoring raises alerts; a person starts retraining
  ``alert_response_days`` after an alert; level 4's gate (the promotion rule) decides.
- **L5**: level 5's loop, ``approval = "auto"``: no person.

The same recipe (the policy's model) is fitted everywhere, so the differences are the operating
mode's. The service in the middle is the measuring device: every level's rides go through level
4's in-process service and prediction log, and are scored once their actuals arrive.

The human delays and minutes are :class:`Assumptions` (documented defaults, printed with the
results). Per level the comparison measures, from what ran: the daily RMSE, the mean before and
after the onset, the days to recovery, human steps and minutes, retrains, whether the serving
model can be traced to its data and code (a lineage lookup that recomputes the training data's
fingerprint), and the cost (processes, automation compute seconds, lines of code,
dependencies). The capability matrix is each level's definition.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json
import logging
import multiprocessing
import os
import pickle
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxi_common.errors import BadInputError
from taxi_common.settings import Settings

LEVELS = (1, 2, 3, 4, 5)
PACKAGES = {1: "level1_notebooks", 2: "level2_devops", 3: "level3_training",
            4: "level4_deployment", 5: "level5_automation"}
HOW = {
    1: "notebook model; a person retrains and hands the file over after a complaint",
    2: "served model file; a person retrains by command after a complaint",
    3: "scheduled retraining pipeline; a person approves each promotion",
    4: "scheduled retraining, gated deployment; monitoring alerts a person, who retrains",
    5: "the closed loop: monitoring triggers retraining, the rule promotes, the watch rolls back",
}
CAPABILITIES = ("tests", "CI", "tracking", "registry", "pipeline", "service", "ops metrics",
                "A/B", "monitoring", "automatic retraining", "rollback")
#: What each capability means here (the level's package has it, or not).
CAPABILITY_NOTES = {
    "tests": "the level's code has unit tests", "CI": "a CI run checks it",
    "tracking": "MLflow experiment tracking", "registry": "MLflow model registry with aliases",
    "pipeline": "a training pipeline (Prefect flow) that can run on a schedule",
    "service": "an HTTP prediction service", "ops metrics": "Prometheus /metrics",
    "A/B": "A/B and shadow tests with a fixed sample size",
    "monitoring": "daily Evidently drift and error monitoring with alerts",
    "automatic retraining": "monitoring starts retraining without a person",
    "rollback": "back to the previous model: by command (levels 3-4), by the watch (level 5)",
}
_HAS = {1: set(), 2: {"tests", "CI", "service", "ops metrics"},
        3: {"tests", "CI", "service", "ops metrics", "tracking", "registry", "pipeline",
            "rollback"}}
_HAS[4] = _HAS[3] | {"A/B", "monitoring"}
_HAS[5] = _HAS[4] | {"automatic retraining"}
#: The servers and long-running processes a level runs, as its README sets it up.
PROCESSES = {
    1: ["a notebook kernel"],
    2: ["gunicorn (the service)"],
    3: ["gunicorn (the service)", "MLflow server", "Prefect server"],
    4: ["gunicorn (the service)", "MLflow server", "Prefect server",
        "the prediction-log database", "Evidently UI"],
    5: ["gunicorn (the service)", "MLflow server", "Prefect server (with its automations)",
        "the prediction-log and events database", "a Prefect worker"],
}


# --- what a person does, and how long it takes -----------------------------------------------

@dataclass(frozen=True)
class Assumptions:
    """The human side of each level: delays in days, work in minutes. Defaults are stated in
    the README; change them with ``--assume KEY=VALUE``."""

    complaint_after_days: int = 10  # L1-L2: users complain after N days of wrong estimates
    notebook_handover_days: int = 4  # L1: from the complaint to the new file in production
    retrain_command_days: int = 1  # L2: from the complaint to the retrained model served
    manual_training_days: int = 14  # L1-L2: a person trains on the last N labelled days
    retrain_every_days: int = 7  # L3: the schedule of the training pipeline
    promotion_review_days: int = 2  # L3: from a challenger to a person's approval
    alert_response_days: int = 1  # L4: from an alert to a person starting retraining
    notebook_minutes: int = 90  # L1: rerun and adapt the notebooks
    handover_minutes: int = 30  # L1: hand the pickle over and have it installed
    command_minutes: int = 15  # L2: run `level2 train`
    deploy_minutes: int = 15  # L2: restart the service on the new file
    review_minutes: int = 15  # L3: review a challenger in MLflow, approve or reject
    alert_response_minutes: int = 20  # L4: read the alert, start the retraining

    @classmethod
    def parse(cls, items: Sequence[str]) -> Assumptions:
        """``["review_minutes=30", …]`` over the defaults; a clear error naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, int] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in names:
                raise BadInputError(f"--assume {item!r}: write KEY=VALUE with KEY one of "
                                    f"{', '.join(sorted(names))}")
            try:
                value = int(text)
            except ValueError:
                raise BadInputError(f"--assume {item!r}: {text!r} is not a whole number") from None
            if value < 0 or (key.endswith("_days") and key != "complaint_after_days"
                             and value > 60) or value > 10_000:
                raise BadInputError(f"--assume {item!r}: out of range (days 0-60, minutes "
                                    "0-10,000)")
            if key in ("retrain_every_days", "manual_training_days", "complaint_after_days") \
                    and value < 1:
                raise BadInputError(f"--assume {item!r}: must be at least 1")
            values[key] = value
        return cls(**values)

    def lines(self) -> list[str]:
        """``key = value`` lines for the terminal."""
        return [f"{k} = {v}" for k, v in dataclasses.asdict(self).items()]


@dataclass(frozen=True)
class CompareConfig:
    """The simulated period every level runs over."""

    scenario: str = "congestion"
    start: dt.date = dt.date(2021, 1, 1)
    days: int = 90
    onset: dt.date | None = None
    seed: int = 0
    strength: float = 1.0
    rows_per_day: int = 2000
    levels: tuple[int, ...] = LEVELS
    recovery_margin: float = 0.15  # recovered: rolling RMSE within 15 % of the pre-onset mean
    rolling_days: int = 3

    def __post_init__(self) -> None:
        unknown = [n for n in self.levels if n not in LEVELS]
        if unknown or not self.levels:
            raise BadInputError(f"--levels: choose among {', '.join(map(str, LEVELS))}")
        self.simulation()  # validates scenario, days, onset, strength, rows

    def simulation(self, **overrides: Any) -> Any:
        """The level-5 simulation config of this period."""
        from level5_automation.simulation import SimulationConfig

        return SimulationConfig(scenario=self.scenario, start=self.start, days=self.days,
                                onset=self.onset, seed=self.seed, strength=self.strength,
                                rows_per_day=self.rows_per_day, **overrides)

    @property
    def drift_onset(self) -> dt.date:
        """The onset the simulation uses."""
        return self.simulation().drift_onset


def level_policy(level: int, assumptions: Assumptions) -> Any:
    """The level-5 policy that makes the loop behave as ``level`` operates (levels 1-2 use it
    only to fit their models: the same recipe everywhere)."""
    from level5_automation.policy import load_policy, parse_policy

    data = load_policy().to_dict()
    if level == 3:  # a schedule, no monitoring, a person approves
        data["triggers"].update(above={}, every_days=assumptions.retrain_every_days,
                                catch_up_every_days=0)
        data["window"]["since_drift"] = False
        data["watch"]["days"] = 0
        data["approval"]["mode"] = "required"
    elif level == 4:  # level 3's schedule, gated with no person; alerts go to a person
        data["triggers"].update(above={}, every_days=assumptions.retrain_every_days,
                                catch_up_every_days=0)
        data["watch"]["days"] = 0
    elif level in (1, 2):
        data["triggers"].update(above={}, every_days=0, catch_up_every_days=0)
        data["watch"]["days"] = 0
    return parse_policy(data, f"level {level}'s operating policy")


# --- the operators: what happens each day at each level ---------------------------------------

@dataclass
class HumanLog:
    """The steps people took."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, day: dt.date, what: str, minutes: int) -> None:
        """A person did ``what`` on ``day``, taking ``minutes``."""
        self.steps.append({"date": day.isoformat(), "step": what, "minutes": minutes})

    @property
    def minutes(self) -> int:
        """The human time in all."""
        return sum(s["minutes"] for s in self.steps)


class Operator:
    """Level 5: the simulation's own day (monitor, tick)."""

    level = 5

    def __init__(self, sim: Any, assumptions: Assumptions, config: CompareConfig,
                 outputs: Path) -> None:
        self.sim, self.assumptions, self.config, self.outputs = sim, assumptions, config, outputs
        self.human = HumanLog()

    def start(self) -> None:
        """After the first champion: nothing more here."""

    def day(self) -> None:
        """One day of this level."""
        self.sim.run_day()

    def human_steps(self) -> list[dict[str, Any]]:
        """Every step a person took."""
        return self.human.steps

    def serving_lineage(self) -> dict[str, Any]:
        """Can the serving model be traced to its data and code?"""
        return registry_lineage(self.sim)


class ManualOperator(Operator):
    """Levels 1 and 2: nobody watches; a complaint, then a manual retrain and handover."""

    def __init__(self, *args: Any, level: int) -> None:
        super().__init__(*args)
        self.level = level
        self.due: dt.date | None = None
        self.served_since = self.config.start
        self.model_file: Path | None = None
        self.normal_rmse: float | None = None

    def start(self) -> None:
        """Hand the first champion over as this level's model file."""
        champion = self.sim.loop.aliases()["champion"]
        self.model_file = self._hand_over(self.sim.frozen, champion_window(self.sim, champion),
                                          self.config.start - dt.timedelta(days=1))

    def _hand_over(self, pipeline: Any, window: Any, day: dt.date) -> Path:
        folder = self.outputs / "models"
        folder.mkdir(parents=True, exist_ok=True)
        if self.level == 1:  # the notebook's pickle: the model and nothing else
            path = folder / f"model-{day.isoformat()}.pkl"
            path.write_bytes(pickle.dumps(pipeline, protocol=5))
            return path
        from level2_devops.model_store import save_model
        from level2_devops.training import data_fingerprint
        from level3_training.tracking import code_version

        train = training_data(self.sim, window)
        metadata = {"data_window": window.as_list(), "train_rows": len(train),
                    "train_fingerprint": data_fingerprint(train), "code_version": code_version(),
                    "model": self.sim.policy.training.models[0], "trained_on": day.isoformat()}
        return save_model(pipeline, metadata, folder)

    def day(self) -> None:
        """Serve and label the day; users complain; a person acts when due."""
        today = self.sim.next_day
        self.sim.run_day(loop=False)
        if self.due is not None and today >= self.due:
            self._retrain(today)
        elif self.due is None and self._complaint(today):
            delay = (self.assumptions.notebook_handover_days if self.level == 1
                     else self.assumptions.retrain_command_days)
            self.due = today + dt.timedelta(days=delay)
            self.sim.loop.record(today, "alert", f"users complain: the estimates have been "
                                 f"wrong for {self.assumptions.complaint_after_days} days; a "
                                 f"person will retrain (in {delay} day(s))", None,
                                 trigger="complaint")

    def _complaint(self, today: dt.date) -> bool:
        """Users complain once every one of the last ``complaint_after_days`` scored days
        served by the current model was more than the margin above the normal error."""
        scored = [d for d in self.sim.days if d.rmse is not None]
        before = [d.rmse for d in scored if d.date < self.config.drift_onset]
        if self.normal_rmse is None and before and today >= self.config.drift_onset:
            self.normal_rmse = sum(before) / len(before)
        if self.normal_rmse is None:
            return False
        recent = [d for d in scored if d.date >= self.served_since]
        n = self.assumptions.complaint_after_days
        limit = self.normal_rmse * (1 + self.config.recovery_margin)
        return len(recent) >= n and all(d.rmse > limit for d in recent[-n:])

    def _retrain(self, today: dt.date) -> None:
        """A person fits the recipe on the last labelled days and puts it in production."""
        from level5_automation.loop import promote_version
        from level5_automation.training import (
            DayWindow,
            fit_challenger,
            labelled_rows,
            register_challenger,
        )

        a, sim = self.assumptions, self.sim
        labelled = today - dt.timedelta(days=sim.config.actuals_delay_days)
        window = DayWindow(max(sim.config.start, labelled - dt.timedelta(
            days=a.manual_training_days - 1)), labelled)
        started = time.perf_counter()
        train = labelled_rows(sim.engine, window)
        fitted = fit_challenger(train, sim.policy.training)
        self.model_file = self._hand_over(fitted.pipeline, window, today)
        how = ("reran the notebook, handed the pickle over" if self.level == 1
               else "ran `level2 train`, restarted the service")
        reason = f"a person {how}: {fitted.model} on {len(train)} rides of {window.label()}"
        # the served file, installed: the service here serves through the registry
        version = register_challenger(sim.settings, fitted, train, window, day=today,
                                      trigger="manual", reason=reason)
        sim.loop.remember(version, fitted.pipeline)
        sim.loop.record(today, "retrain", reason, version, trigger="manual",
                        window=window.as_list(), rows=len(train), model=fitted.model)
        promote_version(sim.loop, today, version, reason, forced=True)
        sim.service.follow_registry()
        sim.timer.seconds["manual"] += time.perf_counter() - started
        if self.level == 1:
            self.human.add(today, "retrain in the notebook", a.notebook_minutes)
            self.human.add(today, "hand the model file over", a.handover_minutes)
        else:
            self.human.add(today, "run `level2 train`", a.command_minutes)
            self.human.add(today, "restart the service on the new file", a.deploy_minutes)
        self.due, self.served_since = None, today + dt.timedelta(days=1)

    def serving_lineage(self) -> dict[str, Any]:
        """Look the served file's data and code up from the file itself."""
        assert self.model_file is not None
        return file_lineage(self.sim, self.model_file)


class ScheduledOperator(Operator):
    """Level 3: the schedule retrains, a person approves (the scripted reviewer)."""

    level = 3

    def day(self) -> None:
        """Serve, label, tick on the schedule (no monitoring)."""
        self.sim.run_day(monitoring=False)

    def human_steps(self) -> list[dict[str, Any]]:
        """Each review of a challenger."""
        from level5_automation.events import read_events

        return [{"date": e.day.isoformat(), "step": f"{e.kind} v{e.version}",
                 "minutes": self.assumptions.review_minutes}
                for e in read_events(self.sim.engine, kinds=("approve", "reject"))
                if e.details.get("review")]


class AlertOperator(Operator):
    """Level 4: level 3's schedule with level 4's gate (no person); monitoring alerts; a person
    starts an extra retraining after an alert; the gate decides."""

    level = 4

    def __init__(self, *args: Any) -> None:
        from level5_automation.policy import load_policy

        super().__init__(*args)
        self.due: dt.date | None = None
        self.alert_day: dt.date | None = None
        # level 4's alert thresholds (the shipped ones), judged apart from the loop's triggers
        self.alerting = dataclasses.replace(self.sim.loop, policy=load_policy())

    def day(self) -> None:
        """Serve, label, monitor; the scheduled tick, or the person's forced one when due;
        then record the day's alerts."""
        from level5_automation.loop import breaches, tick

        sim = self.sim
        today = sim.next_day
        sim.run_day(loop=False, monitoring=True)
        labelled = today - dt.timedelta(days=sim.config.actuals_delay_days)
        if labelled < sim.config.start:
            return
        answering = self.due is not None and today >= self.due
        reason = (f"a person started retraining after the alert of {self.alert_day} "
                  f"({self.assumptions.alert_response_days} day(s) later)") if answering else None
        started = time.perf_counter()
        tick(sim.loop, today, labelled, force=reason)
        sim.timer.seconds["loop"] += time.perf_counter() - started
        sim.service.follow_registry()
        if answering:
            self.human.add(today, "answer the alert: start retraining",
                           self.assumptions.alert_response_minutes)
            self.due = None
        alerts = breaches(self.alerting, labelled)
        champion = sim.loop.aliases().get("champion")
        if not alerts:
            return
        text = ", ".join(f"{a['metric']} {a['value']:.3f} > {a['threshold']:g}" for a in alerts)
        mine = all(a.get("served_by") == champion for a in alerts)
        answer = ("a person will start retraining" if mine and self.due is None
                  else "served by an older model or already answered: no new action")
        sim.loop.record(today, "alert", f"{text} on {labelled}; {answer}",
                        alerts[0].get("served_by") or champion,
                        monitored_day=labelled.isoformat(), breaches=alerts)
        if mine and self.due is None:
            self.alert_day = today
            self.due = today + dt.timedelta(days=self.assumptions.alert_response_days)


def make_operator(level: int, sim: Any, assumptions: Assumptions, config: CompareConfig,
                  outputs: Path) -> Operator:
    """The operator of ``level``."""
    if level in (1, 2):
        return ManualOperator(sim, assumptions, config, outputs, level=level)
    return {3: ScheduledOperator, 4: AlertOperator, 5: Operator}[level](
        sim, assumptions, config, outputs)


# --- lineage ---------------------------------------------------------------------------------

def training_data(sim: Any, window: Any) -> Any:
    """The rows a model of ``window`` was fitted on: the labelled rides of the prediction log
    inside the simulated period, the world's trips before it (the first champion's data)."""
    from level5_automation.training import labelled_rows

    if window.last < sim.config.start:
        return sim.world.days(window)
    return labelled_rows(sim.engine, window)


def champion_window(sim: Any, version: str) -> Any:
    """The training window a registered version records."""
    from level3_training.registry import lineage

    return parse_window(lineage(sim.loop.client(), version).tags["data.window"])


def parse_window(text: Any) -> Any:
    """``"2021-01-01..2021-01-14"`` or ``["2021-01-01", "2021-01-14"]`` -> a DayWindow."""
    from level5_automation.training import DayWindow

    first, last = text.split("..") if isinstance(text, str) else text
    return DayWindow(dt.date.fromisoformat(first), dt.date.fromisoformat(last))


def check_lineage(sim: Any, window: Any, fingerprint: str | None, code: str | None,
                  where: str) -> dict[str, Any]:
    """Fetch the data of ``window`` again and recompute its fingerprint: traced when it
    matches the recorded one and the code version is recorded."""
    from level2_devops.training import data_fingerprint

    if window is None or not fingerprint or not code:
        missing = [n for n, v in (("data window", window), ("data fingerprint", fingerprint),
                                  ("code version", code)) if not v]
        return {"traceable": False, "how": f"{where}: no {', no '.join(missing)}"}
    found = data_fingerprint(training_data(sim, window))
    ok = found == fingerprint
    return {"traceable": ok, "window": window.label(), "code_version": code,
            "how": f"{where}: data {window.label()} " + (
                f"fetched again, fingerprint {found} matches" if ok else
                f"fetched again gives fingerprint {found}, not the recorded {fingerprint}")}


def file_lineage(sim: Any, path: Path) -> dict[str, Any]:
    """The lineage a model file carries: level 2's metadata beside it, or nothing."""
    from level2_devops.model_store import read_metadata

    meta = read_metadata(path)
    if not meta:
        return {"traceable": False, "how": f"{path.name}: a bare pickle, no metadata: nothing "
                "records which data or code made it"}
    window = parse_window(meta["data_window"]) if meta.get("data_window") else None
    return check_lineage(sim, window, meta.get("train_fingerprint"), meta.get("code_version"),
                         f"{path.name} + {Path(path).with_suffix('.json').name}")


def registry_lineage(sim: Any) -> dict[str, Any]:
    """The lineage of ``@champion`` in the registry: its run's data and code tags."""
    from level3_training.registry import lineage

    version = sim.loop.aliases()["champion"]
    tags = lineage(sim.loop.client(), version).tags
    window = parse_window(tags["data.window"]) if tags.get("data.window") else None
    return check_lineage(sim, window, tags.get("data.train_fingerprint"),
                         tags.get("code.version"), f"models:/taxi-duration/{version}")


# --- measures ----------------------------------------------------------------------------------

def recovery_days(dates: Sequence[dt.date], rmse: Sequence[float | None], onset: dt.date,
                  margin: float, rolling: int) -> int | None:
    """Days from the onset to the first day whose mean RMSE over the last ``rolling`` days
    (all on or after the onset) is within ``margin`` of the mean before the onset, counted once
    the error has gone above that limit; 0 when it never did; None when it never came back."""
    before = [r for d, r in zip(dates, rmse, strict=True) if d < onset and r is not None]
    if not before:
        return None
    limit = sum(before) / len(before) * (1 + margin)
    after = [(d, r) for d, r in zip(dates, rmse, strict=True) if d >= onset and r is not None]
    degraded = False
    for i in range(rolling - 1, len(after)):
        window = [r for _, r in after[i - rolling + 1:i + 1]]
        mean = sum(window) / rolling
        if mean > limit:
            degraded = True
        elif degraded:
            return (after[i][0] - onset).days
    return None if degraded else 0


def lines_of_code(package: str) -> int:
    """Non-blank, non-comment lines of a level's Python code (code cells of its notebooks too)."""
    from importlib.util import find_spec

    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    total = 0
    for path in sorted(folder.rglob("*.py")):
        total += _code_lines(path.read_text(encoding="utf-8"))
    for path in sorted(folder.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        total += sum(_code_lines("".join(c["source"])) for c in cells if c["cell_type"] == "code")
    return total


def _code_lines(text: str) -> int:
    docstrings: set[int] = set()
    try:
        for node in ast.walk(ast.parse(text)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    except SyntaxError:
        pass
    return sum(1 for n, line in enumerate(text.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and n not in docstrings)


def extra_dependencies(level: int) -> dict[str, int]:
    """The level's install extra: its direct requirements (the base install's too) and every
    distribution they pull in."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    def requirements(name: str, extras: set[str]) -> list[Requirement]:
        out = []
        for text in distribution(name).requires or []:
            req = Requirement(text)
            marker_ok = (req.marker is None
                         or any(req.marker.evaluate({"extra": e}) for e in extras | {""}))
            if marker_ok:
                out.append(req)
        return out

    project = "mlops-levels"
    direct: set[str] = set()
    todo = [f"level{level}"]
    seen_extras: set[str] = set()
    while todo:
        extra = todo.pop()
        seen_extras.add(extra)
        for req in requirements(project, {extra}):
            if req.name == project:
                todo.extend(e for e in req.extras if e not in seen_extras)
            else:
                direct.add(req.name.lower())
    installed: set[str] = set()
    stack = [(name, frozenset()) for name in direct]
    while stack:
        name, extras = stack.pop()
        key = re.sub(r"[-_.]+", "-", name.lower())
        if key in installed:
            continue
        try:
            reqs = requirements(name, set(extras))
        except PackageNotFoundError:
            continue
        installed.add(key)
        stack.extend((r.name, frozenset(r.extras)) for r in reqs)
    return {"direct": len(direct), "installed": len(installed)}


# --- one level ------------------------------------------------------------------------------------

def quiet_libraries() -> None:
    """Keep the libraries' INFO lines, and the levels' own alert and event lines (each level's
    timeline page has them), out of the comparison's output."""
    import mlflow  # noqa: F401 - MLflow sets its loggers' levels when imported: import it first

    for name in ("mlflow", "alembic", "prefect", "evidently", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("level4_deployment", "level5_automation"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_level(level: int, config: CompareConfig, assumptions: Assumptions, home: Path,
              base_settings: Settings | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the period under ``level``'s way of operating in ``home/level<N>``; its figures."""
    from level5_automation.simulation import Simulation

    quiet_libraries()
    started = time.perf_counter()
    sim_config = config.simulation(
        reviewer="approve" if level == 3 else "none",
        review_delay_days=assumptions.promotion_review_days)
    policy = level_policy(level, assumptions)
    sim = Simulation(sim_config, policy, Path(home) / f"level{level}", base_settings=base_settings,
                     cache_dir=Path(home) / "cache",
                     progress=(lambda line: progress(f"L{level} {line}")) if progress else None)
    outputs = sim.home / "outputs"
    operator = make_operator(level, sim, assumptions, config, outputs)
    try:
        sim.start()
        operator.start()
        while sim.next_day <= sim_config.end:
            operator.day()
        result = sim.result()
        lineage = operator.serving_lineage()
        links = write_outputs(level, sim, result, outputs, lineage)
    finally:
        sim.close()
    return summarize(level, config, result, operator, lineage, links,
                     time.perf_counter() - started)


def write_outputs(level: int, sim: Any, result: Any, outputs: Path,
                  lineage: dict[str, Any]) -> dict[str, str]:
    """The level's timeline page, its model card and (levels 4-5) the last day's Evidently
    report; their paths."""
    from level5_automation.loop import last_labelled_day, monitor
    from level5_automation.report import write_html

    outputs.mkdir(parents=True, exist_ok=True)
    links = {"timeline": str(write_html(result, outputs / "timeline.html",
                                        title=f"Level {level} ({HOW[level]})",
                                        label=f"level {level}: the served model"))}
    card = outputs / "model_card.html"
    card.write_text(model_card(level, sim, lineage), encoding="utf-8")
    links["model card"] = str(card)
    if level >= 4:
        last = last_labelled_day(sim.engine)
        if last is not None:
            report = monitor(sim.loop, last, config=sim.monitoring, html=True)
            if report.html:
                links["Evidently report"] = str(report.html)
    return links


def model_card(level: int, sim: Any, lineage: dict[str, Any]) -> str:
    """A small HTML page: what serves at the end, and what is known of where it came from."""
    import html

    from level3_training.registry import lineage as registry_lineage_of

    version = sim.loop.aliases().get("champion")
    serving = ("the handed-over model file" if level <= 2
               else f"models:/taxi-duration/{version}")
    lines = [f"serving at the end: {serving}",
             f"traceable: {'yes' if lineage['traceable'] else 'no'} ({lineage['how']})"]
    if level >= 3 and version:
        lines += registry_lineage_of(sim.loop.client(), version).lines()
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Level {level}: "
            f"model card</title></head><body><h1>Level {level}: the serving model</h1>"
            f"<ul>{items}</ul></body></html>\n")


def summarize(level: int, config: CompareConfig, result: Any, operator: Operator,
              lineage: dict[str, Any], links: dict[str, str], seconds: float) -> dict[str, Any]:
    """The level's entry of the JSON output."""
    onset = config.drift_onset
    days = [d.date for d in result.days]
    rmse = [d.rmse for d in result.days]

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(sum(kept) / len(kept), 4) if kept else None

    retrains = [e for e in result.events_of("retrain") if not e.details.get("bootstrap")]
    timings = result.timings
    steps = operator.human_steps()
    recovery = (None if config.scenario == "baseline" else
                recovery_days(days, rmse, onset, config.recovery_margin, config.rolling_days))
    return {
        "level": level, "how": HOW[level],
        "mean_rmse_before_onset": mean([r for d, r in zip(days, rmse, strict=True) if d < onset]),
        "mean_rmse_after_onset": mean([r for d, r in zip(days, rmse, strict=True) if d >= onset]),
        "recovery_days": recovery,
        "human_steps": len(steps),
        "human_minutes": sum(s["minutes"] for s in steps),
        "human_log": steps,
        "retrains": len(retrains),
        "drift_retrains": sum(1 for e in retrains if e.details.get("trigger") in
                              ("drift", "catch-up", "manual")),
        "promotions": sum(1 for e in result.events_of("promote")
                          if not e.details.get("bootstrap")),
        "rollbacks": len(result.events_of("rollback")),
        "alerts": len(result.events_of("alert")),
        "traceable": bool(lineage["traceable"]), "lineage": lineage["how"],
        "daily_rmse": [None if r is None else round(r, 4) for r in rmse],
        "dates": [d.isoformat() for d in days],
        "events": [e.as_dict() for e in result.events],
        "capabilities": {c: c in _HAS[level] for c in CAPABILITIES},
        "cost": {"processes": PROCESSES[level], "n_processes": len(PROCESSES[level]),
                 "automation_compute_s": round(timings.get("monitoring", 0.0)
                                               + timings.get("loop", 0.0), 1),
                 "lines_of_code": lines_of_code(PACKAGES[level]),
                 "dependencies": extra_dependencies(level)},
        "seconds": round(seconds, 1), "outputs": links,
    }


# --- all levels ---------------------------------------------------------------------------------

def _run_in_child(level: int, config: CompareConfig, assumptions: Assumptions, home: str,
                  base: Settings | None) -> dict[str, Any]:
    return run_level(level, config, assumptions, Path(home), base)


def compare(config: CompareConfig, assumptions: Assumptions, home: Path, *,
            base_settings: Settings | None = None, jobs: int = 2,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every level of ``config`` (``jobs`` at once, each in its own process) in
    ``home``; the comparison as the JSON output writes it."""
    from level5_automation.simulation import empty_mlflow_store

    say = progress or (lambda _line: None)
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    base = dataclasses.replace(base_settings or Settings.from_env(), prefect_api_url=None)
    quiet_libraries()
    empty_mlflow_store(home / "cache")  # made once, before the processes race for it
    started = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}
    if jobs <= 1 or len(config.levels) == 1:
        for level in config.levels:
            say(f"level {level}: {HOW[level]}")
            results[level] = run_level(level, config, assumptions, home, base, progress=say)
    else:
        context = multiprocessing.get_context("spawn")  # no forked MLflow/Prefect state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_run_in_child, level, config, assumptions, str(home), base):
                       level for level in config.levels}
            say(f"running levels {', '.join(map(str, config.levels))}, {jobs} at a time "
                f"({config.days} days each)")
            for future in as_completed(futures):
                level = futures[future]
                results[level] = future.result()
                say(f"level {level} done in {results[level]['seconds']:.0f} s")
    return {"scenario": config.scenario, "start": config.start.isoformat(), "days": config.days,
            "onset": config.drift_onset.isoformat(), "seed": config.seed,
            "strength": config.strength, "rows_per_day": config.rows_per_day,
            "recovery": {"margin": config.recovery_margin, "rolling_days": config.rolling_days},
            "assumptions": dataclasses.asdict(assumptions),
            "capability_notes": CAPABILITY_NOTES,
            "levels": [results[level] for level in config.levels],
            "wall_s": round(time.perf_counter() - started, 1), "home": str(home)}


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The comparison for a terminal: one row per level, the assumptions under it."""
    head = (f"{'level':<6}{'RMSE before':>12}{'after onset':>12}{'recovery d':>11}"
            f"{'human steps':>12}{'human min':>10}{'retrains':>9}{'traceable':>10}"
            f"{'auto cpu s':>11}{'LOC':>6}{'procs':>6}{'deps':>6}")
    lines = [f"{report['scenario']}, {report['start']} + {report['days']} days, onset "
             f"{report['onset']}, seed {report['seed']}", head]
    for r in report["levels"]:
        cost = r["cost"]
        recovery = ("-" if r["recovery_days"] is None else str(r["recovery_days"]))
        lines.append(
            f"L{r['level']:<5}{_num(r['mean_rmse_before_onset']):>12}"
            f"{_num(r['mean_rmse_after_onset']):>12}{recovery:>11}{r['human_steps']:>12}"
            f"{r['human_minutes']:>10}{r['retrains']:>9}{'yes' if r['traceable'] else 'no':>10}"
            f"{cost['automation_compute_s']:>11.1f}{cost['lines_of_code']:>6}"
            f"{cost['n_processes']:>6}{cost['dependencies']['installed']:>6}")
    lines.append("recovery d: days from the onset until the 3-day mean RMSE is back within "
                 f"{report['recovery']['margin']:.0%} of the mean before it ('-': never)")
    lines.append("assumptions: " + ", ".join(f"{k}={v}" for k, v in report["assumptions"].items()))
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write the comparison as JSON (atomically)."""
    from taxi_common.files import atomic_write

    with atomic_write(Path(path)) as (out, _tmp):
        out.write(json.dumps(report, indent=1).encode("utf-8"))
    return Path(path)


def default_home(settings: Settings) -> Path:
    """Where the comparison's levels run: ``$WORKBOOK_HOME/compare``."""
    return settings.workbook_home / "compare"


def default_report_dir(settings: Settings) -> Path:
    """Where the HTML report goes: ``$WORKBOOK_HOME/report``."""
    return settings.workbook_home / "report"


def environment_jobs() -> int:
    """Two processes by default, at most the CPUs there are."""
    return max(1, min(2, os.cpu_count() or 1))
