"""``score-batch`` as a Prefect flow: one task per row group, on threads here or on a Dask cluster.

Import this module only after :func:`level3_training.runtime.prepare_environment` (Prefect reads
its settings on import). The flow takes business parameters only and reads ``Settings.from_env()``
inside, so the same flow can run from a deployment on another machine.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from level4_deployment.batch import (
    BatchResult,
    ScoreWriter,
    check_trip_file,
    month_file,
    row_group_count,
    score_row_group,
)
from taxi_common.settings import Settings

FLOW_NAME = "taxi-duration-batch-scoring"


#: Row groups in flight at once (submitted, not yet written): what bounds the flow's memory.
IN_FLIGHT = 3


@task(name="score-row-group", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="score-row-group-{index}")
def score_part(path: str, index: int, model: Any, version: str, color: str) -> Any:
    """Score one row group; the scored arrow table (sent back to the flow, which writes it)."""
    return score_row_group(Path(path), index, model, version, color)


def _score_parts(path: Path, out: Path, model: Any, version: str, color: str) -> BatchResult:
    """Submit the row groups to the flow's task runner, at most ``IN_FLIGHT`` at a time, and
    write each result, in order, to the one output file as it arrives: no part files, and
    memory bounded by ``IN_FLIGHT`` row groups whatever the month's size. On Dask the tables
    come back to the flow over the network, so the workers need no shared file system."""
    start = time.perf_counter()
    check_trip_file(path, color)
    groups = row_group_count(path)
    logger = get_run_logger()
    pending: deque[Any] = deque()
    with ScoreWriter(out) as writer:
        for index in range(groups):
            pending.append(score_part.submit(str(path), index, model, version, color))
            if len(pending) >= IN_FLIGHT:
                writer.write(pending.popleft().result())
                logger.info("row group %d/%d scored", writer.row_groups, groups)
        while pending:
            writer.write(pending.popleft().result())
            logger.info("row group %d/%d scored", writer.row_groups, groups)
    return BatchResult(out, writer.rows, writer.scored, groups, version,
                       time.perf_counter() - start)


@flow(name=FLOW_NAME, log_prints=True)
def score_batch_flow(month: str, out: str | None = None, source: str = "synthetic",
                     color: str = "green", model_version: str | None = None, seed: int = 0,
                     scenario: str = "baseline", rows: int | None = None,
                     path: str | None = None) -> dict[str, Any]:
    """Score ``month`` with the champion (or ``model_version``) into a parquet file; ``path``:
    score that parquet file of raw trips (TLC schema) instead of the month's own file."""
    from level4_deployment.models import load_serving_model

    settings = Settings.from_env()
    version, model = load_serving_model(settings, model_version or "champion")
    trips = Path(path) if path else month_file(month, settings, source=source, color=color,
                                               seed=seed, scenario=scenario, n_rows=rows)
    target = Path(out) if out else (settings.reports_dir / "batch"
                                    / f"scores-{month}-v{version}.parquet")
    result = _score_parts(trips, target, model, version, color)
    get_run_logger().info("scored %d trips of %s with version %s into %s (%.0f rows/s)",
                          result.rows, month, version, result.out, result.rows_per_second)
    return {"out": str(result.out), "rows": result.rows, "scored": result.scored,
            "row_groups": result.row_groups, "model_version": version,
            "seconds": round(result.seconds, 3)}


def run_score_batch(parameters: dict[str, Any], *, dask_address: str | None = None,
                    local_dask: bool = False, dask_workers: int = 2) -> dict[str, Any]:
    """Run the flow here (threads), on the Dask scheduler at ``dask_address``, or on a
    ``LocalCluster`` on 127.0.0.1 that it starts and stops (``local_dask``)."""
    if dask_address or local_dask:
        from prefect_dask import DaskTaskRunner

        runner = (DaskTaskRunner(address=dask_address) if dask_address else
                  DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers,
                                                 "threads_per_worker": 1,
                                                 "host": "127.0.0.1",
                                                 "dashboard_address": None,
                                                 "processes": True}))
        return score_batch_flow.with_options(task_runner=runner)(**parameters)
    from prefect.task_runners import ThreadPoolTaskRunner

    # Two row groups in flight at most: memory stays bounded on a month of any size.
    return score_batch_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(
        **parameters)
