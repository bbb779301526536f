"""Fuzzing level 2's service in-process: schemathesis from the served OpenAPI document, and
hypothesis's malformed and hostile requests (``tests/fuzzing.py``); then ``promtool`` lints the
/metrics that thousands of odd requests left behind.

The figures (requests sent, 5xx seen) are in the top-level README's Reliability section; run with
``-s`` to see them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzzing import Tally, run_raw, run_schemathesis, summary
from tests.promtool import promtool_check_metrics

#: Cases per schemathesis mode (positive, negative), and generated bodies (each sent 3 times):
#: 6,100 requests in all, 20-30 s on a loaded 2-core machine.
SCHEMATHESIS_EXAMPLES = 500
RAW_EXAMPLES = 1700


@pytest.fixture(scope="module")
def fuzzed(linear_model_file: Path) -> Iterator[tuple[Any, Tally]]:
    """Level 2's app (default configuration) after the fuzzing, and the tally of the run."""
    from level2_devops.app import close_service, create_app, start_service
    from level2_devops.service.model_source import ModelFileSource

    app = create_app(ModelFileSource(linear_model_file))
    start_service(app)
    tally = Tally()
    run_schemathesis(app, tally, SCHEMATHESIS_EXAMPLES)
    run_raw(app.test_client(), tally, RAW_EXAMPLES, max_rides=app.config["MAX_RIDES"],
            max_bytes=app.config["MAX_CONTENT_LENGTH"])
    print(f"\nlevel 2 fuzz: {summary([tally])}")
    yield app, tally
    close_service(app)


def test_fuzzed_requests_get_no_5xx_and_every_4xx_is_json_naming_the_problem(fuzzed) -> None:
    _, tally = fuzzed
    assert tally.problems == []
    assert tally.server_errors == 0
    assert tally.requests >= 2 * SCHEMATHESIS_EXAMPLES + 3 * RAW_EXAMPLES
    statuses = set(tally.statuses)
    assert {200, 400, 404, 405, 413, 415, 422} <= statuses  # every kind of answer was reached


def test_promtool_accepts_the_metrics_after_fuzzing(fuzzed) -> None:
    app, _ = fuzzed
    response = app.test_client().get("/metrics")
    assert b'method="other"' in response.get_data()  # the fuzz sent invented methods
    promtool_check_metrics(response.get_data())
