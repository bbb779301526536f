"""``score-batch`` as a Prefect flow on a real Prefect server: on threads, and on a Dask
``LocalCluster`` on 127.0.0.1 through prefect-dask; the same rows either way."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from taxi_common.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def champion_home(settings: Settings, registrar: Callable[..., str],
                  monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home whose registry has a champion; WORKBOOK_HOME points at it (the flow reads the
    settings from the environment, as a deployment run by a worker would)."""
    registrar(settings, "linear", "champion")
    monkeypatch.setenv("WORKBOOK_HOME", str(settings.workbook_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return settings


def test_threads_and_dask_score_the_same_rows(champion_home: Settings, prefect_api: str,
                                              pipelines: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from level2_devops.service.model_source import serving_model
    from level4_deployment.batch import score_file
    from level4_deployment.batch_flow import run_score_batch
    from taxi_common.synthetic import generate_month

    month = champion_home.workbook_home / "march-small-groups.parquet"
    trips = generate_month("2021-03", n_rows=6000)
    pq.write_table(pa.Table.from_pandas(trips, preserve_index=False), month,
                   row_group_size=1500)
    out_threads = champion_home.workbook_home / "threads.parquet"
    out_dask = champion_home.workbook_home / "dask.parquet"
    params = {"month": "2021-03", "path": str(month)}
    on_threads = run_score_batch({**params, "out": str(out_threads)})
    on_dask = run_score_batch({**params, "out": str(out_dask)}, local_dask=True)
    assert on_threads["rows"] == on_dask["rows"] == 6000
    assert on_threads["row_groups"] == on_dask["row_groups"] == 4
    assert on_threads["model_version"] == on_dask["model_version"] == "1"
    threads, dask = pd.read_parquet(out_threads), pd.read_parquet(out_dask)
    pd.testing.assert_frame_equal(threads, dask)
    # the same as scoring in this process with the same pipeline (test_batch checks that one
    # against pipeline.predict)
    local = champion_home.workbook_home / "local.parquet"
    score_file(month, serving_model(pipelines["linear"], "1"), "1", local)
    expected = pd.read_parquet(local)
    np.testing.assert_allclose(threads["predicted_duration"], expected["predicted_duration"],
                               rtol=1e-9)
    assert threads["ride_id"].tolist() == expected["ride_id"].tolist()
