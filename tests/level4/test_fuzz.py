"""Fuzzing level 4's service in-process (registry source with an A/B split and shadow scoring,
prediction-log sink on SQLite): schemathesis from the served OpenAPI document and hypothesis's
hostile requests (``tests/fuzzing.py``); then the prediction log holds exactly the rides that were
served, and ``promtool`` lints /metrics.

The app is configured with a small ride and body limit (``MAX_RIDES`` 200, 64 KiB) so that the
limits are fuzzed cheaply and the served document follows them; level 2's fuzz covers the
default limits. The figures are in the top-level README's Reliability section (``-s`` shows them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.fuzzing import Tally, run_raw, run_schemathesis, summary
from tests.promtool import promtool_check_metrics

#: Cases per schemathesis mode, and generated bodies (each sent 3 times): 5,400 requests,
#: 25-35 s on an idle 2-core machine with the registry set-up (about twice that at load 6).
SCHEMATHESIS_EXAMPLES = 450
RAW_EXAMPLES = 1500
LIMITS = {"MAX_RIDES": 200, "MAX_CONTENT_LENGTH": 64 * 1024}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, january: pd.DataFrame,
           pipelines: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Level 4's app after the fuzzing (closed: the log is written), with the tally, the
    writer's stats, the prediction log's summary and the /metrics text taken before closing."""
    from level2_devops.app import close_service, create_app, start_service
    from level4_deployment.log_writer import PredictionLogWriter
    from level4_deployment.serving import APP_CONFIG, PredictionLogSink, RegistrySource
    from level4_deployment.store import engine_for, prediction_summary
    from taxi_common.settings import Settings
    from tests.level4.conftest import register

    settings = Settings(workbook_home=Path(tmp_path_factory.mktemp("fuzz4")) / "workbook")
    register(settings, pipelines["linear"], january, alias="champion")
    register(settings, pipelines["ridge"], january, alias="challenger")
    source = RegistrySource(settings, challenger_share=0.5, shadow=True, reload_interval=600)
    # The in-process fuzz outruns any real client: a queue that holds all of it (nothing dropped)
    writer = PredictionLogWriter.for_settings(settings, flush_interval=0.05, max_queue=500_000)
    app = create_app(source, {**APP_CONFIG, **LIMITS}, sink=PredictionLogSink(writer, source))
    source.watcher.check()  # as the master does before the fork
    start_service(app)
    tally = Tally()
    try:
        run_schemathesis(app, tally, SCHEMATHESIS_EXAMPLES)
        run_raw(app.test_client(), tally, RAW_EXAMPLES, max_rides=LIMITS["MAX_RIDES"],
                max_bytes=LIMITS["MAX_CONTENT_LENGTH"])
        metrics = app.test_client().get("/metrics").get_data()
    finally:
        close_service(app)
    engine = engine_for(settings)
    logged = prediction_summary(engine)
    engine.dispose()
    print(f"\nlevel 4 fuzz: {summary([tally])}; {tally.rides_served} rides served, "
          f"{logged['total']} logged")
    yield {"tally": tally, "stats": writer.stats, "logged": logged, "metrics": metrics}


def test_fuzzed_requests_get_no_5xx_and_every_4xx_is_json_naming_the_problem(fuzzed) -> None:
    tally: Tally = fuzzed["tally"]
    assert tally.problems == []
    assert tally.server_errors == 0
    assert tally.requests >= 2 * SCHEMATHESIS_EXAMPLES + 3 * RAW_EXAMPLES
    assert {200, 400, 404, 405, 413, 415, 422} <= set(tally.statuses)


def test_every_ride_served_under_fuzzing_is_in_the_prediction_log(fuzzed) -> None:
    tally, stats, logged = fuzzed["tally"], fuzzed["stats"], fuzzed["logged"]
    assert tally.rides_served > 1000
    assert stats.dropped == 0 and stats.failed_attempts == 0
    assert logged["total"] == stats.written == tally.rides_served
    assert set(logged["by_variant"]) == {"champion", "challenger"}  # both sides were fuzzed


def test_promtool_accepts_the_metrics_after_fuzzing(fuzzed) -> None:
    assert b'variant="challenger"' in fuzzed["metrics"]
    promtool_check_metrics(fuzzed["metrics"])
