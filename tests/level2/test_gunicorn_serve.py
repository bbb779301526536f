"""``mlops-levels level2 serve``: the real command under gunicorn with 2 workers, over real HTTP.

The integration test starts the command as a subprocess in its own process group on a free port,
sends requests with urllib from several threads until both workers have served some, checks that
``/metrics`` counts every request of every worker, and stops the group (and checks it is gone).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from level2_devops.cli import app as level2_app
from level2_devops.model_store import latest_model
from taxi_common.local_servers import (
    free_port,
    http_ok,
    stop_process_group,
    wait_until_healthy,
)
from tests.promtool import promtool_check_metrics
from tests.sockets import listening_addresses

MLOPS_LEVELS = Path(sys.executable).parent / "mlops-levels"
RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}


def _request(url: str, body: object | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _counter_files(home: Path) -> list[Path]:
    """The per-worker counter files of prometheus_client's multiprocess mode (workers only)."""
    return list((home / "run").glob("prometheus-*/counter_*.db"))


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.slow
def test_serve_runs_gunicorn_with_two_workers_and_aggregates_metrics(
        linear_model_file: Path, tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    models = home / "models"
    models.mkdir(parents=True)
    (models / "taxi-duration-v1.pkl").write_bytes(linear_model_file.read_bytes())
    (models / "taxi-duration-v1.json").write_bytes(
        linear_model_file.with_suffix(".json").read_bytes())
    log = tmp_path / "serve.log"
    env = {**os.environ, "WORKBOOK_HOME": str(home), "HOME": str(tmp_path)}
    with open(log, "wb") as out:  # --model omitted: the newest file in $WORKBOOK_HOME/models
        proc = subprocess.Popen([str(MLOPS_LEVELS), "level2", "serve", "--port", str(port),
                                 "--workers", "2"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, lambda: http_ok(f"{base}/health"), what="level2 serve",
                           log_path=log)
        assert listening_addresses(port) == {"127.0.0.1"}  # --host omitted: loopback only
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while len(_counter_files(home)) < 2 and sent < 2000:  # until both workers served
                results = list(pool.map(lambda _: _request(f"{base}/predict", RIDE), range(40)))
                assert {status for status, _ in results} == {200}
                sent += len(results)
        assert len(_counter_files(home)) == 2, "one worker served every request"
        status, body = _request(f"{base}/predict", [RIDE] * 25)
        assert status == 200 and len(json.loads(body)) == 25
        status, body = _request(f"{base}/predict", {"PULocationID": 0})
        assert status == 422 and json.loads(body)["error"] == "invalid_ride"
        assert json.loads(_request(f"{base}/predict", RIDE)[1])["model_version"] == "1"

        status, body = _request(f"{base}/metrics")
        text = body.decode()
        assert status == 200
        ok = {"endpoint": "/predict", "method": "POST"}
        assert _metric(text, "taxi_http_requests_total", **ok, status="200") == sent + 2
        assert _metric(text, "taxi_http_requests_total", **ok, status="422") == 1
        assert _metric(text, "taxi_predictions_total", model_version="1",
                       variant="champion") == sent + 26
        assert _metric(text, "taxi_predicted_duration_seconds_count") == sent + 26
        assert _metric(text, "taxi_http_request_duration_seconds_count",
                       endpoint="/predict") == sent + 3
        assert _metric(text, "taxi_model_info", model_version="1", variant="champion") == 1
        assert _request(f"{base}/openapi.yaml")[0] == 200
    finally:
        stop_process_group(proc.pid, timeout=30)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the whole group (master and workers) is gone
    assert not list((home / "run").glob("prometheus-*")), "metrics folder left behind"
    assert not (tmp_path / ".gunicorn").exists(), "gunicorn made a control socket in HOME"
    assert "Traceback" not in log.read_text()
    promtool_check_metrics(body)  # the multiprocess exposition, lint included (last: may skip)


def _serve(args: list[str], home: Path):
    return CliRunner().invoke(level2_app, ["serve", *args], env={"WORKBOOK_HOME": str(home)})


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_serve_without_any_model_is_a_one_line_error(tmp_path: Path) -> None:
    _one_line_error(_serve(["--port", str(free_port())], tmp_path),
                    "no model file taxi-duration-v*.pkl")


def test_serve_with_a_missing_model_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = _serve(["--model", str(tmp_path / "nope.pkl"), "--port", str(free_port())],
                    tmp_path)
    _one_line_error(result, "nope.pkl does not exist")


def test_serve_on_a_port_in_use_is_a_one_line_error(
        linear_model_file: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve(["--model", str(linear_model_file), "--port", str(port)], tmp_path)
    _one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert not (tmp_path / "run").exists(), "the port is checked before anything is made"


@pytest.mark.parametrize(("args", "text"), [
    (["--workers", "0"], "--workers 0: use 1 or more"),
    (["--port", "70000"], "--port 70000 is not a TCP port"),
])
def test_serve_rejects_bad_options_in_one_line(
        linear_model_file: Path, tmp_path: Path, args, text) -> None:
    _one_line_error(_serve(["--model", str(linear_model_file), *args], tmp_path), text)


def test_the_default_model_is_the_highest_version(tmp_path: Path) -> None:
    for name in ("taxi-duration-v2.pkl", "taxi-duration-v10.pkl", "taxi-duration-v9.pkl",
                 "taxi-duration-latest.pkl", "other-v99.pkl"):
        (tmp_path / name).write_bytes(b"")
    assert latest_model(tmp_path) == tmp_path / "taxi-duration-v10.pkl"


def test_a_refused_serve_leaves_the_environment_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """The model is loaded after the metrics folder is made (so that a source's own metrics
    are multiprocess too): a model that cannot be loaded must still leave no folder behind, and
    must not leak PROMETHEUS_MULTIPROC_DIR into the process (tests and the demo serve
    in-process; a server started later, Prefect uses prometheus_client too, would crash on the
    deleted folder)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    result = _serve(["--model", str(tmp_path / "nope.pkl"), "--port", str(free_port())],
                    tmp_path)
    _one_line_error(result, "nope.pkl does not exist")
    assert (tmp_path / "run").is_dir(), "the refusal came before the metrics folder was made"
    assert not list((tmp_path / "run").iterdir()), "metrics folder left behind"
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_multiprocess_dir_is_restored_and_removed(tmp_path: Path, monkeypatch) -> None:
    from level2_devops.service.server import _use_multiprocess_dir, multiprocess_dir
    from taxi_common.settings import Settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/previous")
    try:
        with multiprocess_dir(Settings(workbook_home=tmp_path)) as directory:
            assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
            assert directory.is_dir()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "/previous"
        assert not directory.exists()
    finally:
        # prometheus_client now writes to "/previous"; monkeypatch restores the variable but not
        # the value class it chose, so every later metric in this process would fail
        _use_multiprocess_dir(None)


# --- worker restarts: the metrics folder belongs to the master, not to any worker -------------

def _worker_pids(master: int) -> set[int]:
    """The live (not zombie) child processes of ``master``, read from /proc."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited while we looked
            continue
        if int(fields[1]) == master and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


@contextmanager
def _level2_serve(model_file: Path, tmp_path: Path, workers: int = 2) -> Iterator[tuple[str, int]]:
    """``mlops-levels level2 serve`` on a free port with its own WORKBOOK_HOME: (base URL, pid)."""
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "WORKBOOK_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MLOPS_LEVELS), "level2", "serve", "--model", str(model_file),
                                 "--port", str(port), "--workers", str(workers)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, lambda: http_ok(f"{base}/health"), what="level2 serve",
                           log_path=log)
        _wait_for(lambda: len(_worker_pids(proc.pid)) == workers, f"{workers} workers run")
        yield base, proc.pid
    finally:
        stop_process_group(proc.pid, timeout=30)
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_workers_that_restart_or_die_leave_predictions_and_metrics_working(
        linear_model_file: Path, tmp_path: Path) -> None:
    """HUP (all workers replaced), TTIN then TTOU (one worker stopped) and SIGKILL of a worker:
    afterwards /predict and /metrics still answer 200, and the counters of the workers that
    exited still count (prometheus_client keeps a dead worker's counter files)."""
    predicted = 0

    def burst(base: str, n: int = 40) -> None:
        nonlocal predicted
        with ThreadPoolExecutor(4) as pool:
            statuses = [s for s, _ in pool.map(lambda _: _request(f"{base}/predict", RIDE),
                                               range(n))]
        assert statuses == [200] * n
        predicted += n

    def check_metrics(base: str) -> None:
        status, body = _request(f"{base}/metrics")
        assert status == 200, body[:300]
        text = body.decode()
        assert _metric(text, "taxi_predictions_total") == predicted
        assert _metric(text, "taxi_http_requests_total", endpoint="/predict",
                       status="200") == predicted
        assert _metric(text, "taxi_model_info") == 1

    with _level2_serve(linear_model_file, tmp_path) as (base, master):
        burst(base)
        old = _worker_pids(master)
        os.kill(master, signal.SIGHUP)  # reload: every worker is replaced by a new one
        _wait_for(lambda: len(_worker_pids(master)) == 2 and not old & _worker_pids(master),
                  "HUP replaced both workers")
        burst(base)
        check_metrics(base)

        before = _worker_pids(master)
        os.kill(master, signal.SIGTTIN)  # one worker more ...
        _wait_for(lambda: len(_worker_pids(master)) == 3, "TTIN added a worker")
        os.kill(master, signal.SIGTTOU)  # ... and one less: the oldest exits gracefully
        _wait_for(lambda: len(_worker_pids(master)) == 2 and len(before & _worker_pids(master))
                  == 1, "TTOU stopped an old worker")
        burst(base)
        check_metrics(base)

        victim = min(_worker_pids(master))
        os.kill(victim, signal.SIGKILL)  # a crash: the master replaces the worker
        _wait_for(lambda: victim not in _worker_pids(master)
                  and len(_worker_pids(master)) == 2, "the killed worker was replaced")
        burst(base)
        check_metrics(base)
        assert list((tmp_path / "home" / "run").glob("prometheus-*/counter_*.db"))
    assert not list((tmp_path / "home" / "run").glob("prometheus-*")), "folder left behind"


# --- the source and the sink start in each worker after the fork, and close when it exits -----

LIFECYCLE_SERVER = '''
"""level2's server.serve with a source and a sink that record where they start and close."""
import os, queue, sys, threading
from pathlib import Path

from level2_devops.service.model_source import ModelFileSource
from level2_devops.service.server import ServeOptions, serve
from taxi_common.settings import Settings

model, port, home, events = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])


def note(line):
    with open(events, "a") as out:  # one short write per line: atomic in append mode
        out.write(line + "\\n")


class ThreadedSource(ModelFileSource):
    """The file's model, served only while a background thread (a poller) runs in this process."""

    def _read(self):
        note(f"model-load {os.getpid()}")
        return super()._read()

    def start(self):
        self.poller = threading.Thread(target=threading.Event().wait, daemon=True)
        self.poller.start()
        note(f"source-start {os.getpid()}")

    def select(self, request):
        if not self.poller.is_alive():
            raise RuntimeError("the poller is not running in this worker")
        return super().select(request)

    def close(self):
        note(f"source-close {os.getpid()}")


class QueueSink:
    """Records go to a queue; a thread writes them; close() flushes (level 4's shape)."""

    def start(self):
        self.queue = queue.Queue()
        self.writer = threading.Thread(target=self._write)
        self.writer.start()

    def submit(self, record):
        self.queue.put(record)

    def _write(self):
        while (record := self.queue.get()) is not None:
            note(f"record {os.getpid()} {record.request_id} {len(record.minutes)} "
                 f"{record.variant} {record.model_version}")

    def close(self):
        self.queue.put(None)
        self.writer.join()
        note(f"sink-close {os.getpid()}")


note(f"master {os.getpid()}")
serve(ServeOptions(port=port, workers=2), Settings(workbook_home=home),
      lambda: ThreadedSource(model), sink_factory=QueueSink,
      app_config={"RESPONSE_FIELDS": ("variant", "request_id")})
'''


@pytest.mark.slow
def test_the_source_and_sink_start_after_the_fork_and_close_at_worker_exit(
        linear_model_file: Path, tmp_path: Path) -> None:
    script, events, log = tmp_path / "serve.py", tmp_path / "events.txt", tmp_path / "serve.log"
    script.write_text(LIFECYCLE_SERVER)
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(linear_model_file), str(port),
                                 str(tmp_path / "home"), str(events)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base, answers = f"http://127.0.0.1:{port}", []

    def burst() -> None:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda n: _request(f"{base}/predict", [RIDE] * n),
                                    [1, 3] * 10))
        assert [status for status, _ in results] == [200] * 20, results[0]
        answers.extend(json.loads(body) for _, body in results)

    try:
        wait_until_healthy(proc, lambda: http_ok(f"{base}/health"), what="serve.py",
                           log_path=log)
        _wait_for(lambda: len(_worker_pids(proc.pid)) == 2, "2 workers run")
        burst()
        old = _worker_pids(proc.pid)
        os.kill(proc.pid, signal.SIGHUP)  # new workers: they start; the old ones close
        _wait_for(lambda: len(_worker_pids(proc.pid)) == 2 and not old & _worker_pids(proc.pid),
                  "HUP replaced both workers")
        burst()
    finally:
        stop_process_group(proc.pid, timeout=30)
    assert "Traceback" not in log.read_text()

    lines = [line.split() for line in events.read_text().splitlines()]
    master = {int(w[1]) for w in lines if w[0] == "master"}
    started = [int(w[1]) for w in lines if w[0] == "source-start"]
    assert master == {proc.pid} and len(started) == len(set(started)) == 4  # 2 workers x 2
    assert [int(w[1]) for w in lines if w[0] == "model-load"] == [proc.pid]  # once, in the master
    assert proc.pid not in started  # never in the master: threads do not survive fork()
    assert sorted(int(w[1]) for w in lines if w[0] == "source-close") == sorted(started)
    assert sorted(int(w[1]) for w in lines if w[0] == "sink-close") == sorted(started)

    records = [w for w in lines if w[0] == "record"]
    assert {int(w[1]) for w in records} <= set(started)
    assert {(w[4], w[5]) for w in records} == {("champion", "1")}
    answered = {a[0]["request_id"]: len(a) for a in answers}
    assert {w[2]: int(w[3]) for w in records} == answered  # every response, once, flushed
