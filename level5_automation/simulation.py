"""Days replayed through the real parts on a virtual clock: the level-5 loop, shown working.

Each virtual day:

1. the day's synthetic trips (the scenario switches on at the onset day, across month
   boundaries) are served by the level-4 service in-process: level 2's ``create_app`` with
   level 4's ``RegistrySource`` and ``PredictionLogSink``, called through Flask's test client
   in batches; every prediction goes through the prediction-log writer into the database;
2. the actuals of the trips of ``actuals_delay_days`` ago arrive (level 4's ``actuals`` table);
3. that day is monitored (level 4's ``monitor_day``, by pickup, against the reference of the
   version that served it);
4. the loop ticks (:func:`level5_automation.loop.tick`): reviews, watch, triggers, retraining,
   the promotion rule, promotion or rollback;
5. when the champion moved, the service's alias watcher is checked at once (``watcher.check()``
   on the virtual clock, instead of its polling thread), so the next day is served by the new
   champion.

Before the first day a champion is trained by the policy's recipe on the ``[window] days``
before the start (the bootstrap), so a simulation needs nothing prepared. A frozen copy of that
first champion scores the same rides every day: the counterfactual of a system without the loop
(level 2's way of operating: a model file, replaced by hand).

Deterministic for its arguments: a fresh ``WORKBOOK_HOME`` (registry, tables) per run, seeded
data and sampling, and scikit-learn, BLAS and OpenMP limited to ``threads`` (default one) with
threadpoolctl, so the same arguments give the same events.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from level5_automation.events import Event, read_events, review
from level5_automation.loop import (
    ONE_DAY,
    Loop,
    bootstrap,
    monitor,
    promote_version,
    tick,
    write_reference,
)
from level5_automation.policy import Policy, Training
from level5_automation.training import DayWindow, FittedChallenger, labelled_rows
from taxi_common.errors import BadInputError
from taxi_common.prepare import FEATURE_COLUMNS, TARGET
from taxi_common.scenarios import SCENARIOS, Scenario
from taxi_common.settings import Settings

logger = logging.getLogger(__name__)

MARKER = ".level5-simulation"
MAX_DAYS = 366
FAULT_KINDS = {
    "retrain-error": "the retrain of that day raises (bad data, a bug): an error event, the "
                     "champion stays",
    "worse-challenger": "that day's challenger predicts the training mean: the rule rejects it",
    "tracking-down": "the tracking store does not answer during that day's tick",
    "bad-promotion": "a model predicting the training mean is promoted without the rule (a "
                     "careless manual promotion): the watch must roll it back",
}
REVIEWERS = ("none", "approve", "reject")


@dataclass(frozen=True)
class Fault:
    """A failure injected on one day (see :data:`FAULT_KINDS`)."""

    kind: str
    day: dt.date

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``retrain-error@2021-02-03`` -> a Fault; a clear error otherwise."""
        kind, _, day = text.strip().partition("@")
        if kind not in FAULT_KINDS or not day:
            raise BadInputError(f"--fault {text!r}: write KIND@YYYY-MM-DD with KIND one of "
                                f"{', '.join(FAULT_KINDS)}")
        try:
            return cls(kind, dt.date.fromisoformat(day))
        except ValueError:
            raise BadInputError(f"--fault {text!r}: {day!r} is not a date YYYY-MM-DD") from None


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: the scenario and its onset, the days, the traffic, the world's delays."""

    scenario: str = "congestion"
    start: dt.date = dt.date(2021, 1, 1)
    days: int = 90
    onset: dt.date | None = None  # default: a third of the way into the period
    seed: int = 0
    strength: float = 1.0
    rows_per_day: int = 2000
    actuals_delay_days: int = 1
    batch_size: int = 1000  # rides per POST /predict
    reviewer: str = "none"  # a scripted person answering pending promotions
    review_delay_days: int = 1
    faults: tuple[Fault, ...] = ()
    threads: int = 1

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise BadInputError(f"--scenario {self.scenario!r}: use one of "
                                f"{', '.join(SCENARIOS)}")
        if not 1 <= self.days <= MAX_DAYS:
            raise BadInputError(f"--days {self.days}: simulate 1 to {MAX_DAYS} days")
        if not 100 <= self.rows_per_day <= 20_000:
            raise BadInputError(f"--rows-per-day {self.rows_per_day}: choose 100 to 20,000")
        if not 0 <= self.actuals_delay_days <= 7:
            raise BadInputError(f"--actuals-delay {self.actuals_delay_days}: 0 to 7 days")
        if self.reviewer not in REVIEWERS:
            raise BadInputError(f"--reviewer {self.reviewer!r}: use one of {', '.join(REVIEWERS)}")
        if self.onset is not None and not self.start <= self.onset <= self.end:
            raise BadInputError(f"--onset {self.onset}: choose a day from {self.start} to "
                                f"{self.end}")
        Scenario(self.scenario, 1, self.strength)  # checks the strength
        for fault in self.faults:
            if not self.start <= fault.day <= self.end:
                raise BadInputError(f"--fault {fault.kind}@{fault.day}: the day is outside "
                                    f"{self.start}..{self.end}")

    @property
    def end(self) -> dt.date:
        """The last simulated day."""
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def drift_onset(self) -> dt.date:
        """The day the scenario begins: ``onset``, or a third of the way into the period."""
        return self.onset or self.start + dt.timedelta(days=self.days // 3)


# --- the world: each day's trips -------------------------------------------------------------

def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


class World:
    """The synthetic city: the trips of each day, the scenario on from its onset.

    A month's trips are generated once (``rows_per_day`` × its days, then level 1's 1-60 minute
    filter, then the trips the service accepts: a distance of more than 200 miles is refused
    with a 422, about 0.1 % of trips) with the scenario starting at the onset day in the
    onset's month, from the first day in later months, and not at all before: a scenario changes
    only trips picked up on or after its start day, so the days before the onset are the
    baseline's, ride for ride.
    """

    def __init__(self, config: SimulationConfig, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self._months: dict[str, pd.DataFrame] = {}

    def scenario_for(self, month: str) -> Scenario:
        """The scenario of ``month``'s trips."""
        onset, c = self.config.drift_onset, self.config
        if c.scenario == "baseline" or month < _month(onset):
            return Scenario("baseline")
        start_day = onset.day if month == _month(onset) else 1
        return Scenario(c.scenario, start_day, c.strength)

    def month(self, month: str) -> pd.DataFrame:
        """A month's traffic (level 4's ``month_traffic``: ride ids, inputs, durations)."""
        if month not in self._months:
            from level4_deployment.traffic import days_in_month, month_traffic

            rows = self.config.rows_per_day * days_in_month(month)
            if len(self._months) >= 3:
                self._months.pop(next(iter(self._months)))
            traffic = month_traffic(month, settings=self.settings, rows=rows,
                                    seed=self.config.seed, scenario=self.scenario_for(month))
            self._months[month] = servable(traffic)
        return self._months[month]

    def day(self, day: dt.date) -> pd.DataFrame:
        """The trips picked up on ``day``."""
        traffic = self.month(_month(day))
        picked = traffic["pickup_datetime"].dt.date == day
        return traffic.loc[picked.to_numpy()].reset_index(drop=True)

    def days(self, window: DayWindow) -> pd.DataFrame:
        """The trips picked up in ``window``."""
        parts = [self.day(window.first + dt.timedelta(days=i)) for i in range(window.days)]
        return pd.concat(parts, ignore_index=True)


# --- the service, in-process -----------------------------------------------------------------

def servable(traffic: pd.DataFrame) -> pd.DataFrame:
    """The trips the service accepts (level 4's batch-scoring rule: zones 1-265, 0-200 miles)."""
    from level4_deployment.batch import _servable

    keep = _servable(traffic, "PULocationID", "DOLocationID")
    return traffic.loc[keep].reset_index(drop=True)


class InProcessService:
    """Level 4's service in this process: level 2's app with the registry source and the
    prediction-log sink, called through Flask's test client (no sockets, no threads polling
    the registry: :meth:`follow_registry` checks it on the virtual clock)."""

    def __init__(self, settings: Settings, batch_size: int) -> None:
        from level2_devops.app import create_app
        from level4_deployment.log_writer import PredictionLogWriter
        from level4_deployment.serving import APP_CONFIG, PredictionLogSink, RegistrySource

        self.source = RegistrySource(settings, reload_interval=3600.0)
        self.writer = PredictionLogWriter.for_settings(settings, flush_interval=0.05)
        self.sink = PredictionLogSink(self.writer, self.source)
        self.app = create_app(self.source, APP_CONFIG, sink=self.sink)
        self.client = self.app.test_client()
        self.batch_size = batch_size

    def start(self) -> None:
        """Load the champion and start the log writer."""
        self.follow_registry()
        self.sink.start()

    def follow_registry(self) -> bool:
        """Check the registry's aliases now; True when the served model changed."""
        return self.source.watcher.check()

    def serving(self) -> str | None:
        """The version ``/health`` says is served."""
        body = self.client.get("/health").get_json()
        return body.get("model_version")

    def serve(self, trips: pd.DataFrame) -> dict[str, int]:
        """POST the trips in batches; wait until the log has them; the answers by version."""
        from level4_deployment.traffic import ride_bodies

        bodies = list(ride_bodies(trips))
        versions: dict[str, int] = defaultdict(int)
        for i in range(0, len(bodies), self.batch_size):
            response = self.client.post("/predict", json=bodies[i:i + self.batch_size])
            if response.status_code != 200:
                raise RuntimeError(f"the service answered {response.status_code}: "
                                   f"{response.get_data(as_text=True)[:300]}")
            for answer in response.get_json():
                versions[str(answer["model_version"])] += 1
        if not self.writer.flush(timeout=60):
            raise RuntimeError("the prediction log did not take the day's rows within 60 s")
        return dict(versions)

    def close(self) -> None:
        """Write what is queued, stop."""
        self.sink.close()
        self.source.close()


# --- faults ----------------------------------------------------------------------------------

def mean_pipeline(train: pd.DataFrame) -> Any:
    """A deliberately bad model: it predicts the training mean (level 2's featurizer in front,
    so it takes the same inputs and logs the same signature)."""
    from sklearn.dummy import DummyRegressor
    from sklearn.pipeline import Pipeline

    from taxi_common.features import TripFeaturizer

    pipeline = Pipeline([("featurize", TripFeaturizer()), ("regress", DummyRegressor())])
    return pipeline.fit(train[list(FEATURE_COLUMNS)], train[TARGET].to_numpy())


def _failing_trainer(train: pd.DataFrame, training: Training) -> FittedChallenger:
    raise RuntimeError(f"injected fault: training on {len(train)} rows raised")


def _mean_trainer(train: pd.DataFrame, training: Training) -> FittedChallenger:
    return FittedChallenger(mean_pipeline(train), "mean (injected fault)", {}, len(train))


def _unreachable_tracking_uri() -> str:
    from taxi_common.local_servers import free_port

    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# --- the result ------------------------------------------------------------------------------

@dataclass
class DayRecord:
    """One simulated day: the rides served, by which champion, and how wrong it was once the
    actuals arrived (``frozen_*``: the first champion, never replaced, on the same rides)."""

    date: dt.date
    rows: int
    champion: str | None
    rmse: float | None = None
    mae: float | None = None
    frozen_rmse: float | None = None
    frozen_mae: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The day as the JSON output writes it."""
        def num(value: float | None) -> float | None:
            return None if value is None else round(float(value), 4)

        return {"date": self.date.isoformat(), "rmse": num(self.rmse), "mae": num(self.mae),
                "champion": self.champion, "rows": self.rows,
                "frozen_rmse": num(self.frozen_rmse), "frozen_mae": num(self.frozen_mae)}


@dataclass
class SimulationResult:
    """Every day and every event of a simulation, and where the time went."""

    config: SimulationConfig
    policy: Policy
    home: Path
    days: list[DayRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The issue's format: scenario, onset, seed, days, events (plus the settings used)."""
        c = self.config
        return {"scenario": c.scenario, "onset": c.drift_onset.isoformat(), "seed": c.seed,
                "start": c.start.isoformat(), "end": c.end.isoformat(),
                "strength": c.strength, "rows_per_day": c.rows_per_day,
                "actuals_delay_days": c.actuals_delay_days,
                "faults": [f"{f.kind}@{f.day.isoformat()}" for f in c.faults],
                "reviewer": c.reviewer, "policy": self.policy.to_dict(),
                "days": [d.as_dict() for d in self.days],
                "events": [e.as_dict() for e in self.events],
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                "home": str(self.home)}

    def events_of(self, *kinds: str) -> list[Event]:
        """The events of these kinds, in order."""
        return [e for e in self.events if e.kind in kinds]

    def mean(self, metric: str, first: dt.date, last: dt.date) -> float:
        """The mean daily ``metric`` (rmse, mae, frozen_rmse…) over days ``first``..``last``
        that have one."""
        values = [getattr(d, metric) for d in self.days
                  if first <= d.date <= last and getattr(d, metric) is not None]
        if not values:
            raise ValueError(f"no day from {first} to {last} has a {metric}")
        return float(np.mean(values))

    def recovery(self, days: int = 14) -> dict[str, Any]:
        """How the loop met the drift: days from the onset to the first alert and to the first
        promotion after it; the mean daily RMSE over the ``days`` before the onset, and, for
        the loop and the frozen first champion, over the ``days`` after that promotion and the
        ``days`` after those (None where the simulation is too short)."""
        onset = self.config.drift_onset
        alerts = [e.day for e in self.events_of("alert") if e.day >= onset]
        promotions = [e.day for e in self.events_of("promote") if e.day >= onset]
        out: dict[str, Any] = {
            "onset": onset.isoformat(),
            "alert_after_days": (alerts[0] - onset).days if alerts else None,
            "promotion_after_days": (promotions[0] - onset).days if promotions else None}

        def mean(metric: str, first: dt.date, n: int) -> float | None:
            last = first + dt.timedelta(days=n - 1)
            scored = [d for d in self.days if first <= d.date <= last
                      and getattr(d, metric) is not None]
            return round(self.mean(metric, first, last), 4) if len(scored) == n else None

        out["before"] = mean("rmse", onset - dt.timedelta(days=days), days)
        if promotions:
            first = promotions[0] + ONE_DAY
            second = first + dt.timedelta(days=days)
            out.update({f"loop_next_{days}": mean("rmse", first, days),
                        f"frozen_next_{days}": mean("frozen_rmse", first, days),
                        f"loop_then_{days}": mean("rmse", second, days),
                        f"frozen_then_{days}": mean("frozen_rmse", second, days)})
        return out

    def timeline(self) -> str:
        """One line per day: rides, champion, RMSE of the loop and of the frozen model, and
        the day's events."""
        by_day: dict[dt.date, list[Event]] = defaultdict(list)
        for event in self.events:
            by_day[event.day].append(event)
        onset = self.config.drift_onset

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        lines = [f"{'date':<11}{'rides':>6}{'champ':>6}{'RMSE':>7}{'frozen':>7}  events"]
        for d in self.days:
            marks = ", ".join(f"{e.kind}" + (f" v{e.version}" if e.version else "")
                              for e in by_day.get(d.date, []))
            if d.date == onset:
                marks = f"<- onset of {self.config.scenario}" + (f"; {marks}" if marks else "")
            lines.append(f"{d.date.isoformat():<11}{d.rows:>6}{'v' + (d.champion or '?'):>6}"
                         f"{num(d.rmse):>7}{num(d.frozen_rmse):>7}  {marks}")
        return "\n".join(lines)


# --- the simulation --------------------------------------------------------------------------

def prepare_home(home: Path) -> Path:
    """A fresh simulation folder: created, or emptied when an earlier simulation made it.
    A folder with other content is refused (it might be someone's workbook)."""
    home = Path(home).resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise BadInputError(f"{home} is not empty and was not made by a simulation: choose "
                                "another --home (it is emptied at every run)")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by mlops-levels level5 simulate; emptied at every run\n")
    return home


def empty_mlflow_store(cache_dir: Path) -> Path:
    """An empty MLflow SQLite store with MLflow's tables, made once per MLflow version in
    ``cache_dir`` and copied into each simulation: creating them takes 5-10 s here, a copy
    milliseconds."""
    import mlflow

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"mlflow-{mlflow.__version__}-empty.db"
    if not path.exists():
        part = cache_dir / f".{path.name}.{os.getpid()}.part"
        part.unlink(missing_ok=True)
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{part}").search_experiments()
        os.replace(part, path)
    return path


def simulation_settings(home: Path, base: Settings | None = None) -> Settings:
    """The simulation's own settings: everything under ``home`` (SQLite tables, SQLite MLflow
    store), so runs are independent and repeatable; the Prefect API of ``base``, if any, still
    receives the events."""
    base = base or Settings.from_env()
    return Settings(workbook_home=home, tlc_base_url=base.tlc_base_url,
                    prefect_api_url=base.prefect_api_url)


class Timer:
    """Seconds spent per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


def _errors(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


class Simulation:
    """A simulation that can be run day by day (tests answer approvals between days)."""

    def __init__(self, config: SimulationConfig, policy: Policy, home: Path, *,
                 base_settings: Settings | None = None, monitoring: Any = None,
                 progress: Callable[[str], None] | None = None,
                 cache_dir: Path | None = None) -> None:
        from level4_deployment.monitoring_config import load_config
        from level4_deployment.store import create_tables, engine_for
        from level5_automation.events import create_events_table

        self.config, self.policy = config, policy
        self.home = prepare_home(home)
        self.settings = simulation_settings(self.home, base_settings)
        store = empty_mlflow_store(Path(cache_dir) if cache_dir else self.home.parent / "cache")
        shutil.copyfile(store, self.home / "mlflow.db")
        self.engine = engine_for(self.settings)
        create_tables(self.engine)
        create_events_table(self.engine)
        self.monitoring = monitoring if monitoring is not None else load_config()
        self.loop = Loop(self.settings, self.engine, policy)
        self.world = World(config, self.settings)
        self.service: InProcessService | None = None
        self.timer = Timer()
        self.progress = progress or (lambda _line: None)
        self.days: list[DayRecord] = []
        self.next_day = config.start
        self.frozen: Any = None
        self._limits: Any = None

    # --- set-up and tear-down --------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Train, register and promote the first champion on the days before the start."""
        w = self.policy.window
        holdout = DayWindow(self.config.start - dt.timedelta(days=w.holdout_days),
                            self.config.start - ONE_DAY)
        window = DayWindow(holdout.first - dt.timedelta(days=w.days), holdout.first - ONE_DAY)
        with self.timer("data"):
            train, rows = self.world.days(window), self.world.days(holdout)
        with self.timer("bootstrap"):
            version = bootstrap(self.loop, self.config.start - ONE_DAY, train, rows, window,
                                holdout)
        self.frozen = self.loop.pipeline(version)

    def start(self) -> None:
        """Limit threads, make the first champion, start the service."""
        from threadpoolctl import threadpool_limits

        from level3_training.runtime import apply_environment_defaults

        apply_environment_defaults(self.settings)
        # one progress bar per model download would bury the timeline
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._limits = threadpool_limits(limits=self.config.threads)
        self._bootstrap()
        self.service = InProcessService(self.settings, self.config.batch_size)
        self.service.start()

    def close(self) -> None:
        """Stop the service and release the database."""
        if self.service is not None:
            self.service.close()
            self.service = None
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        self.engine.dispose()

    # --- one day ---------------------------------------------------------------------------

    def run_day(self, *, loop: bool = True, monitoring: bool | None = None) -> DayRecord:
        """Simulate the next day (see the module doc). ``loop=False`` serves the day and
        records the actuals that arrive, but neither monitors nor ticks: the data a real
        ``level5 run`` then finds (its tests prepare days this way). ``monitoring`` (default:
        as ``loop``) runs level 4's monitoring or not whether the loop ticks or not: the other
        levels of ``mlops-levels compare`` tick without monitoring (level 3's schedule) or
        monitor without ticking (level 4, where a person starts the retraining)."""
        assert self.service is not None, "call start() first"
        day, c = self.next_day, self.config
        monitoring = loop if monitoring is None else monitoring
        with self.timer("data"):
            trips = self.world.day(day)
        with self.timer("serving"):
            served = self.service.serve(trips)
        record = DayRecord(day, len(trips), max(served, key=served.get) if served else None)
        self.days.append(record)
        labelled = day - dt.timedelta(days=c.actuals_delay_days)
        if labelled >= c.start:
            self._label_and_monitor(labelled, monitoring=monitoring)
        if not loop:
            with self.timer("serving"):
                self.service.follow_registry()
            self.next_day = day + ONE_DAY
            self.progress(self._progress_line(record))
            return record
        self._review(day)
        faults = [f for f in c.faults if f.day == day]
        with self.timer("loop"):
            for fault in faults:
                if fault.kind == "bad-promotion":
                    self._bad_promotion(day, labelled)
            if labelled >= c.start:
                self._tick(day, labelled, faults)
        with self.timer("serving"):
            self.service.follow_registry()
        self.next_day = day + ONE_DAY
        self.progress(self._progress_line(record))
        return record

    def _label_and_monitor(self, day: dt.date, *, monitoring: bool = True) -> None:
        """The actuals of ``day``'s trips arrive; the day is monitored and scored."""
        from level4_deployment.store import record_actuals
        from level4_deployment.traffic import actual_rows

        with self.timer("actuals"):
            record_actuals(self.engine, actual_rows(self.world.day(day)))
        with self.timer("monitoring"):
            try:
                if monitoring:
                    monitor(self.loop, day, config=self.monitoring)
            except Exception as exc:  # noqa: BLE001 - monitoring failed: the loop goes on
                from level5_automation.loop import record_error

                record_error(self.loop, self.next_day, "monitoring", exc, None)
        with self.timer("scoring"):
            rows = labelled_rows(self.engine, DayWindow(day, day))
            record = next(d for d in self.days if d.date == day)
            if len(rows):
                actual = rows[TARGET].to_numpy(np.float64)
                record.rmse, record.mae = _errors(rows["prediction"].to_numpy(), actual)
                record.frozen_rmse, record.frozen_mae = _errors(
                    self.frozen.predict(rows[list(FEATURE_COLUMNS)]), actual)

    def _review(self, day: dt.date) -> None:
        """The scripted reviewer answers promotions pending for ``review_delay_days``."""
        from level5_automation.events import pending_approvals

        if self.config.reviewer == "none":
            return
        for pending in pending_approvals(self.engine):
            due = pending.event.day + dt.timedelta(days=self.config.review_delay_days)
            if pending.approval is None and day >= due:
                review(self.engine, pending.version, self.config.reviewer, day=day,
                       actor="simulated reviewer", settings=self.settings)

    def _tick(self, day: dt.date, labelled: dt.date, faults: list[Fault]) -> None:
        kinds = {f.kind for f in faults}
        loop = self.loop
        if "retrain-error" in kinds or "worse-challenger" in kinds:
            trainer = _failing_trainer if "retrain-error" in kinds else _mean_trainer
            loop = replace(self.loop, trainer=trainer)
        if "tracking-down" in kinds:
            loop = replace(loop, settings=replace(
                self.settings, mlflow_tracking_uri=_unreachable_tracking_uri()))
        force = ("injected fault: " + ", ".join(sorted(kinds & {"retrain-error",
                                                                 "worse-challenger",
                                                                 "tracking-down"}))
                 if kinds - {"bad-promotion"} else None)
        tick(loop, day, labelled, force=force)

    def _bad_promotion(self, day: dt.date, labelled: dt.date) -> None:
        """Register a mean predictor and promote it without the rule (the watch's test)."""
        from level5_automation.training import register_challenger

        window = DayWindow(max(self.config.start, labelled - dt.timedelta(days=6)), labelled)
        train = labelled_rows(self.engine, window)
        fitted = _mean_trainer(train, self.policy.training)
        reason = "injected fault: a model predicting the mean, promoted without the rule"
        version = register_challenger(self.settings, fitted, train, window, day=day,
                                      trigger="fault", reason=reason)
        self.loop.remember(version, fitted.pipeline)
        last = DayWindow(labelled, labelled)
        write_reference(self.loop, version, fitted.pipeline, labelled_rows(self.engine, last),
                        f"labelled traffic {last.label()}")
        promote_version(self.loop, day, version, reason, forced=True)

    def _progress_line(self, record: DayRecord) -> str:
        today = [e for e in read_events(self.engine, since=record.date, until=record.date)]
        marks = ", ".join(e.kind + (f" v{e.version}" if e.version else "") for e in today)
        return (f"{record.date}  {record.rows:>5} rides  v{record.champion}"
                + (f"  {marks}" if marks else ""))

    # --- the whole run ---------------------------------------------------------------------

    def run(self, days: int | None = None) -> SimulationResult:
        """Run ``days`` more days (default: to the end); the result so far."""
        end = self.config.end if days is None else min(
            self.config.end, self.next_day + dt.timedelta(days=days - 1))
        while self.next_day <= end:
            self.run_day()
        return self.result()

    def result(self) -> SimulationResult:
        """Every day and event so far."""
        return SimulationResult(self.config, self.policy, self.home, list(self.days),
                                read_events(self.engine), dict(self.timer.seconds))


def simulate(config: SimulationConfig, policy: Policy, home: Path, *,
             base_settings: Settings | None = None, monitoring: Any = None,
             progress: Callable[[str], None] | None = None,
             cache_dir: Path | None = None) -> SimulationResult:
    """Run a whole simulation in ``home`` (emptied first); its result."""
    started = time.perf_counter()
    sim = Simulation(config, policy, home, base_settings=base_settings, monitoring=monitoring,
                     progress=progress, cache_dir=cache_dir)
    try:
        sim.start()
        result = sim.run()
    finally:
        sim.close()
    result.timings["total"] = time.perf_counter() - started
    return result
