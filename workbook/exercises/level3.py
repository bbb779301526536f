"""Level 3's answers, recomputed with level 3's own parts, and the check of its build task.

The flow's steps are plain functions: ``prepared_month`` (the validated, cached months),
``combine_months``, ``sample_trials`` and ``run_trial`` (the seeded random search), and the
registry's ``register_version``/``promote``/``rollback``. The answers call them directly — no
Prefect server, and an MLflow SQLite store in a temporary folder where the registry is needed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from taxi_common.settings import Settings
from workbook.exercises.build import CheckFailed
from workbook.exercises.context import Context

#: Exercise 2's search: ``level3 train --models ridge --trials 4 --rows 20000``.
SEARCH_MODEL, SEARCH_TRIALS, SEARCH_ROWS = "ridge", 4, 20_000


def _request(ctx: Context, month: str, n_rows: int | None = None, seed: int = 0) -> Any:
    from taxi_common.data import MonthRequest

    return MonthRequest.make(month, source=ctx.source, n_rows=n_rows, seed=seed)


def month(ctx: Context, name: str, n_rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The flow's prepared month (``prepared_month``, cached in the context's home)."""
    from level3_training.data import prepared_month

    return ctx.memo(f"month:{name}:{n_rows}:{seed}", lambda: prepared_month(
        _request(ctx, name, n_rows, seed), ctx.settings)[0])


# --- exercise 1: the data cache ------------------------------------------------------------------

def second_run_cache_hits(ctx: Context) -> int:
    """1a: cache hits of a second ``level3 train`` on the same months (a fresh home)."""
    from level3_training.data import prepared_month

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(workbook_home=Path(home), tlc_base_url=ctx.settings.tlc_base_url)
        requests = [_request(ctx, m, 2000) for m in ("2021-01", "2021-02")]
        for request in requests:
            prepared_month(request, settings)
        return sum(prepared_month(request, settings)[1] for request in requests)


# --- exercise 2: the seeded random search --------------------------------------------------------

def _search(ctx: Context, seed: int) -> list[tuple[float, float]]:
    """(alpha, validation RMSE) of each trial of the exercise's search; the flow's ``--seed``
    seeds the data and the draw of the trials alike."""
    def run() -> list[tuple[float, float]]:
        from level2_devops.training import effective_params
        from level3_training.candidates import run_trial
        from level3_training.search import sample_trials

        train, val = (month(ctx, m, SEARCH_ROWS, seed) for m in ("2021-01", "2021-02"))
        return [(effective_params(SEARCH_MODEL, params)["alpha"],
                 run_trial(SEARCH_MODEL, i, params, train, val)[0].val["rmse"])
                for i, params in enumerate(sample_trials(SEARCH_MODEL, SEARCH_TRIALS, seed))]

    return ctx.memo(f"search:{seed}", run)


def _winner(ctx: Context, seed: int) -> tuple[float, float]:
    return min(_search(ctx, seed), key=lambda trial: trial[1])


def best_alpha(ctx: Context) -> str:
    """2a: the alpha of the best trial."""
    return f"{_winner(ctx, 0)[0]:g}"


def best_alpha_val_rmse(ctx: Context) -> float:
    """2b: its validation RMSE."""
    return _winner(ctx, 0)[1]


def seed1_best_alpha(ctx: Context) -> str:
    """2c: the alpha of the best trial of the same search with ``--seed 1``."""
    return f"{_winner(ctx, 1)[0]:g}"


def seed1_best_val_rmse(ctx: Context) -> float:
    """2d: its validation RMSE."""
    return _winner(ctx, 1)[1]


# --- exercise 3: two training months -------------------------------------------------------------

def two_month_train_rows(ctx: Context) -> int:
    """3a: training rows of ``--train-months 2021-01,2021-02`` (whole months)."""
    from level3_training.data import combine_months

    return len(combine_months([month(ctx, "2021-01"), month(ctx, "2021-02")]))


def _linear_march(ctx: Context, train_months: tuple[str, ...]) -> float:
    def run() -> float:
        from level3_training.candidates import run_trial
        from level3_training.data import combine_months

        train = combine_months([month(ctx, m) for m in train_months])
        return run_trial("linear", 0, {}, train, month(ctx, "2021-03"))[0].val["rmse"]

    return ctx.memo(f"march:{train_months}", run)


def two_month_linear_march_rmse(ctx: Context) -> float:
    """3b: the linear candidate's validation RMSE on 2021-03, trained on 2021-01 and 2021-02."""
    return _linear_march(ctx, ("2021-01", "2021-02"))


def one_month_linear_march_rmse(ctx: Context) -> float:
    """3c: the same, trained on 2021-01 only."""
    return _linear_march(ctx, ("2021-01",))


# --- exercise 4 and the build task: the registry -------------------------------------------------

def tiny_registry(folder: Path, versions: int) -> Any:
    """An MLflow client on a new SQLite store in ``folder`` with ``versions`` registered versions
    of a tiny linear pipeline (what ``level3 train`` registers, on 40 rows)."""
    import os

    import numpy as np

    from level2_devops.models import build_model
    from level3_training.registry import client_for, register_version
    from level3_training.tracking import configure_tracking, log_pipeline_model, start_run

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    settings = Settings(workbook_home=folder)
    experiment_id = configure_tracking(settings)
    client = client_for(settings.tracking_uri)
    x = pd.DataFrame({"PULocationID": [1, 2, 3, 4] * 10, "DOLocationID": [5, 6, 7, 8] * 10,
                      "trip_distance": np.linspace(0.5, 9, 40)})
    pipeline = build_model("linear").fit(x, 3 * x["trip_distance"].to_numpy() + 2)
    run_id = start_run(client, experiment_id, "tiny")
    model_id = log_pipeline_model(client, run_id, pipeline, x.head(3)).model_id
    for i in range(versions):
        register_version(client, model_id, run_id, description=f"version {i + 1}", tags={})
    return client


def _after_rollback(ctx: Context) -> dict[str, str | None]:
    """The aliases after ``promote 1``, ``promote 2``, ``rollback``."""
    def run() -> dict[str, str | None]:
        from level3_training.registry import CHAMPION, PREVIOUS, aliases, promote, rollback

        with tempfile.TemporaryDirectory() as folder:
            client = tiny_registry(Path(folder), 2)
            promote(client, "1", reason="first")
            promote(client, "2", reason="better")
            rollback(client, reason="worse in production")
            now = aliases(client)
            return {CHAMPION: now.get(CHAMPION), PREVIOUS: now.get(PREVIOUS)}

    return ctx.memo("rollback", run)


def champion_after_rollback(ctx: Context) -> int:
    """4a: the version that is ``@champion`` after promote 1, promote 2, rollback."""
    return int(_after_rollback(ctx)["champion"])


def previous_after_rollback(ctx: Context) -> str:
    """4b: where ``@previous`` points then (``none`` when it is cleared)."""
    return _after_rollback(ctx)["previous"] or "none"


def check_champion_history(root: Path) -> str:
    """7a: ``registry.champion_history(client)`` lists the versions the audit tags say were
    champion, newest first: ``[{"version", "action", "promoted_at", "reason", "replaced"}]``."""
    import level3_training.registry as registry

    history_of = getattr(registry, "champion_history", None)
    if history_of is None:
        raise CheckFailed("level3_training/registry.py has no function champion_history(client)")
    with tempfile.TemporaryDirectory() as folder:
        client = tiny_registry(Path(folder), 3)
        for version, reason in (("1", "first"), ("2", "better in March"), ("3", "newer data")):
            registry.promote(client, version, reason=reason, actor="teacher")
            time.sleep(1.05)  # the audit time stamps are to the second
        registry.rollback(client, reason="v3 is worse live", actor="teacher")
        history = history_of(client)
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckFailed(f"champion_history returns {type(history).__name__}, not a list of "
                          "dicts")
    keys = ("version", "action", "reason", "replaced")
    try:
        got = [tuple(str(h[k]) for k in keys) for h in history]
    except KeyError as exc:
        raise CheckFailed(f"a history entry has no key {exc}: give {', '.join(keys)} and "
                          "promoted_at") from exc
    expected = [("2", "rollback", "v3 is worse live", "3"), ("3", "promote", "newer data", "2"),
                ("1", "promote", "first", "none")]
    if got != expected:
        raise CheckFailed(f"after promote 1, 2, 3 and a rollback, champion_history gives "
                          f"{got}; expected {expected} (newest first, from the promotion.* tags)")
    stamps = [h.get("promoted_at", "") for h in history]
    if stamps != sorted(stamps, reverse=True):
        raise CheckFailed("champion_history is not sorted by promoted_at, newest first")
    return "champion_history: 2 (rollback), 3, 1; version 2's own promotion is not in the tags"
