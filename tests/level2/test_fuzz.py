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

from tests.fuzzing import (
    ERROR_CODES,
    Tally,
    run_raw,
    run_schemathesis,
    run_schemathesis_http,
    summary,
)
from tests.promtool import promtool_check_metrics

#: Cases per schemathesis mode (positive, negative), and generated bodies (each sent 3 times):
#: 5,400 requests in-process, 20-30 s on an idle 2-core machine (about twice that at load 6).
SCHEMATHESIS_EXAMPLES = 450
RAW_EXAMPLES = 1500
#: Cases per mode over real HTTP against gunicorn (slower: a socket round trip each).
HTTP_EXAMPLES = 150


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


@pytest.mark.slow
def test_schemathesis_over_http_against_gunicorn(linear_model_file: Path, tmp_path: Path
                                                 ) -> None:
    """The same document-driven cases over real HTTP, against ``mlops-levels level2 serve``
    (gunicorn, 2 workers): what gunicorn's request parser lets through must not break the app."""
    import os
    import subprocess
    import sys

    from taxi_common.local_servers import (
        free_port,
        http_ok,
        stop_process_group,
        wait_until_healthy,
    )

    port, log = free_port(), tmp_path / "serve.log"
    command = [str(Path(sys.executable).with_name("mlops-levels")), "level2", "serve",
               "--model", str(linear_model_file), "--port", str(port), "--workers", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, "WORKBOOK_HOME": str(tmp_path)},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base, tally = f"http://127.0.0.1:{port}", Tally()
    try:
        wait_until_healthy(proc, lambda: http_ok(f"{base}/health"), what="level2 serve",
                           log_path=log)
        run_schemathesis_http(base, tally, HTTP_EXAMPLES)
    finally:
        stop_process_group(proc.pid, timeout=30)
    print(f"\nlevel 2 fuzz over HTTP: {summary([tally])}")
    assert tally.problems == [] and tally.server_errors == 0
    assert tally.requests >= 2 * HTTP_EXAMPLES
    assert "Traceback" not in log.read_text()


def test_the_served_openapi_documents_are_valid_openapi_3(linear_model_file: Path) -> None:
    """Level 2's and level 4's served documents pass the OpenAPI 3.0 meta-schema (the check
    schemathesis ships); a broken document does not."""
    import jsonschema_rs
    import schemathesis

    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level4_deployment.serving import APP_CONFIG

    for config in (None, APP_CONFIG):
        app = create_app(ModelFileSource(linear_model_file), config)
        schema = schemathesis.openapi.from_wsgi("/openapi.yaml", app)
        schema.validate()
        assert schema.raw_schema["openapi"].startswith("3.0")
    documented = schema.raw_schema["components"]["schemas"]["Error"]["properties"]["error"]
    codes = {c.strip(" .") for c in documented["description"].split(":", 1)[1].split(",")}
    assert codes == ERROR_CODES | {"internal_error"}  # what the fuzz accepts in a 4xx, and 500
    broken = {**schema.raw_schema, "paths": {"/predict": {"post": {"responses": "none"}}}}
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()
