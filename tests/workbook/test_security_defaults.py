"""Security defaults of the whole project, each with a test (issue 13, "Security defaults").

1. Every server the project starts binds 127.0.0.1 unless told otherwise: the CLI options, the
   starters' defaults, and a scan of every command line and bind address in the source.
2. Request bodies and batch sizes are capped, in level 2's and level 4's configurations: 413 and
   422 JSON errors.
3. No debug mode in a served app, even with FLASK_DEBUG=1 in the environment.
4. Nothing from a request is unpickled, evaluated or used as a file path: a scan of the service
   modules (the request attributes they read; the calls they make), which a test shows would
   catch a view that did.
5. Model files are loaded only from the configured path or registry.
6. The alert webhook's URL comes from the monitoring config file only: no CLI option, no
   environment variable, no proxy from the environment, no redirect followed.

The scans read the source with ``ast``: they are the honest test of "no code path does X", and
each has a test that feeds it the code it must refuse.
"""

from __future__ import annotations

import ast
import datetime as dt
import http.server
import inspect
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from tests.http_helpers import QuietHandler, serving

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taxi_common", "level1_notebooks", "level2_devops", "level3_training",
            "level4_deployment", "level5_automation", "workbook", "benchmarks", "scripts")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}


def _sources(packages=PACKAGES) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


# --- 1. servers bind 127.0.0.1 --------------------------------------------------------------

def _all_options(command: Any, path: str = "mlops-levels") -> Iterator[tuple[str, Any]]:
    """Every parameter of every command under ``command`` (typer's own click), by command."""
    for param in command.params:
        yield path, param
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _all_options(sub, f"{path} {name}")


def test_every_host_option_of_the_cli_defaults_to_loopback() -> None:
    from workbook.cli import app

    hosts = [(where, p) for where, p in _all_options(typer.main.get_command(app))
             if p.name in {"host", "bind", "address", "listen"}]
    assert {where for where, _ in hosts} >= {"mlops-levels level2 serve",
                                              "mlops-levels level4 serve"}
    for where, param in hosts:
        assert param.default in LOOPBACK, f"{where} --{param.name} defaults to {param.default}"


def test_the_server_starters_default_to_loopback() -> None:
    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.service.server import ServeOptions, gunicorn_settings
    from level3_training.mlflow_server import start_mlflow_server
    from level4_deployment.dashboard import ui_command
    from taxi_common.local_servers import free_port
    from taxi_common.settings import Settings

    app = create_app(ModelFileSource(Path("/nonexistent.pkl")))
    assert gunicorn_settings(ServeOptions(), app)["bind"] == ["127.0.0.1:8000"]
    for starter in (start_mlflow_server, ui_command, free_port):
        assert inspect.signature(starter).parameters["host"].default == "127.0.0.1", starter
    command = ui_command(Settings(workbook_home=Path("/tmp/unused")), 8123)
    assert command[command.index("--host") + 1] == "127.0.0.1"


_HOST_FLAGS = {"--host", "-h", "--bind", "-b", "--listen"}
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", "*"}


def bind_problems(tree: ast.Module, where: str) -> list[str]:
    """Where ``tree`` listens beyond loopback: an any-address constant, a command line whose
    ``--host``/``-b`` value is a constant other than loopback, or a ``host=`` keyword (or a
    server's address tuple) with such a constant. A name or an expression is fine: its default
    is what the other tests check."""
    found = []

    def constant(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) \
            else None

    def check(node: ast.AST, what: str) -> None:
        value = constant(node)
        if value is not None:
            host = value.rpartition(":")[0] if value.count(":") == 1 else value
            if host not in LOOPBACK:
                found.append(f"{where}:{node.lineno}: {what} {value!r}")

    for node in ast.walk(tree):
        value = constant(node)
        if value is not None and (value in _ANY_ADDRESS - {"*"} or value.startswith("0.0.0.0:")):
            found.append(f"{where}:{node.lineno}: the any-address {value!r}")
        if isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for flag, nxt in zip(items, items[1:], strict=False):
                if constant(flag) in _HOST_FLAGS:
                    check(nxt, f"{constant(flag)}")
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in {"host", "bind", "listen"}:
                    check(keyword.value, f"{keyword.arg}=")
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name.endswith("Server") and node.args and isinstance(node.args[0], ast.Tuple):
                check(node.args[0].elts[0], f"{name} address")
        if isinstance(node, ast.FunctionDef):  # def f(host="0.0.0.0")
            args = node.args
            for arg, default in zip(args.args[::-1], args.defaults[::-1], strict=False):
                if arg.arg in {"host", "bind"}:
                    check(default, f"{node.name}({arg.arg}=)")
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                if arg.arg in {"host", "bind"} and default is not None:
                    check(default, f"{node.name}({arg.arg}=)")
    return found


def test_no_server_in_the_source_listens_beyond_loopback() -> None:
    problems = [p for path, tree in _sources()
                for p in bind_problems(tree, str(path.relative_to(ROOT)))]
    assert problems == []


@pytest.mark.parametrize("code", [
    'subprocess.Popen(["mlflow", "server", "--host", "0.0.0.0"])',
    'cmd = ["gunicorn", "-b", "10.0.0.5:8000", "app:app"]',
    'http.server.ThreadingHTTPServer(("", 8000), Handler)',
    'uvicorn.run(app, host="0.0.0.0")',
    'def serve(host: str = "::"):\n    pass',
    'BIND = "0.0.0.0:8000"',
])
def test_the_bind_scan_catches_a_server_on_every_interface(code: str) -> None:
    assert bind_problems(ast.parse(code), "example") != []


# --- 2. caps on bodies and batches ----------------------------------------------------------

@pytest.fixture(params=["level2", "level4"])
def capped_client(request: pytest.FixtureRequest, linear_model_file: Path):
    """A client of the app as level 2 or level 4 configures it (the model from a file)."""
    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level4_deployment.serving import APP_CONFIG

    config = APP_CONFIG if request.param == "level4" else None
    app = create_app(ModelFileSource(linear_model_file), config)
    return app, app.test_client()


@pytest.fixture(scope="session")
def linear_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small linear model file (version v1), written by level 2's model store."""
    from level2_devops.model_store import save_model
    from level2_devops.training import fit_model, load_prepared_month
    from taxi_common.settings import Settings

    home = tmp_path_factory.mktemp("security")
    trips = load_prepared_month("2021-01", settings=Settings(workbook_home=home), n_rows=2000)
    return save_model(fit_model("linear", trips), {"model": "linear"}, home / "models")


def test_bodies_and_batches_are_capped(capped_client) -> None:
    app, client = capped_client
    limit, max_rides = app.config["MAX_CONTENT_LENGTH"], app.config["MAX_RIDES"]
    assert 0 < limit <= 16 * 1024 * 1024 and 0 < max_rides <= 10_000
    too_big = client.post("/predict", data=b"[" + b" " * limit + b"]",
                          content_type="application/json")
    assert too_big.status_code == 413
    assert too_big.get_json()["error"] == "request_entity_too_large"
    too_many = client.post("/predict", json=[RIDE] * (max_rides + 1))
    assert too_many.status_code == 422 and too_many.get_json()["error"] == "invalid_batch"
    assert str(max_rides) in too_many.get_json()["message"]


def test_gunicorn_keeps_its_request_line_and_header_limits(linear_model_file: Path) -> None:
    """gunicorn caps the request line (4094 bytes), the header count (100) and a header's size
    (8190) by default; 0 would lift a cap. The service's settings leave them on."""
    from gunicorn.config import Config

    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.service.server import ServeOptions, gunicorn_settings

    config = Config()
    for key, value in gunicorn_settings(ServeOptions(), create_app(
            ModelFileSource(linear_model_file))).items():
        config.set(key, value)
    assert 0 < config.limit_request_line <= 8190
    assert 0 < config.limit_request_fields <= 100
    assert 0 < config.limit_request_field_size <= 8190


# --- 3. no debug mode -----------------------------------------------------------------------

def test_a_served_app_is_never_in_debug_mode(monkeypatch: pytest.MonkeyPatch,
                                             linear_model_file: Path) -> None:
    """Regression: Flask takes DEBUG from FLASK_DEBUG in the environment, so a shell with
    FLASK_DEBUG=1 served level 2 and level 4 in debug mode."""
    from flask import abort

    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level2_devops.service.server import ServeOptions, gunicorn_settings
    from level4_deployment.serving import APP_CONFIG

    monkeypatch.setenv("FLASK_DEBUG", "1")
    for config in (None, APP_CONFIG):
        app = create_app(ModelFileSource(linear_model_file), config)
        assert app.debug is False and not app.testing
        assert not app.config.get("PROPAGATE_EXCEPTIONS")

        @app.get("/boom")
        def boom():
            raise RuntimeError("secret detail")

        @app.get("/abort")
        def aborted():
            abort(500)

        for path in ("/boom", "/abort"):
            response = app.test_client().get(path)
            assert response.status_code == 500 and b"secret" not in response.data
            assert response.get_json()["error"] == "internal_error"
    settings = gunicorn_settings(ServeOptions(), app)
    assert not settings.get("reload") and settings.get("loglevel", "info") != "debug"


# --- 4. nothing from a request is unpickled, evaluated or opened ----------------------------

#: The modules a request runs through (views, error handlers, parser, sources, sink, writer).
SERVICE_MODULES = ("level2_devops/app.py", "level2_devops/service/rides.py",
                   "level2_devops/service/model_source.py", "level2_devops/service/metrics.py",
                   "level2_devops/service/sink.py", "level2_devops/service/server.py",
                   "level4_deployment/serving.py", "level4_deployment/watcher.py",
                   "level4_deployment/routing.py", "level4_deployment/log_writer.py",
                   "level4_deployment/store.py", "level4_deployment/journal.py")
#: What the service may read of a request: the body (for the ride parser), headers, method,
#: path, matched route, content type and length. Not args, form, files, cookies, json, values.
REQUEST_ATTRIBUTES = {"get_data", "stream", "content_length", "mimetype", "headers", "method",
                      "path", "url_rule", "environ"}
#: ``json.loads`` and ``msgspec.json.decode`` parse data, they run none: fine on a request body.
SAFE_RECEIVERS = {"json", "msgspec.json"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "import_module",
                   "system", "popen", "Popen", "run", "call", "check_output", "loads", "load",
                   "read_bytes", "read_text", "write_bytes", "write_text", "unlink", "rmtree",
                   "send_file", "send_from_directory", "unsafe_load", "full_load"}
#: Functions that may make one of those calls, and why: none of them touches the request (the
#: scan checks that too).
ALLOWED = {
    ("level2_devops/app.py", "openapi_text"): "reads openapi.yaml from the package",
    ("level2_devops/service/model_source.py", "_read"): "loads the configured model file",
    ("level2_devops/service/server.py", "run_gunicorn"): "gunicorn's app.run()",
    ("level2_devops/service/server.py", "multiprocess_dir"): "removes its own metrics folder",
    ("level4_deployment/log_writer.py", "_run"): "the writer thread's loop",
    # the crash journal's own files, named from WORKBOOK_HOME and the worker's pid
    ("level4_deployment/journal.py", "_open_next"): "opens the worker's next journal file",
    ("level4_deployment/journal.py", "committed"): "deletes a committed journal segment",
    ("level4_deployment/journal.py", "close"): "deletes the worker's empty journal file",
    ("level4_deployment/journal.py", "read_journal"): "reads a journal file",
    ("level4_deployment/journal.py", "recover_journals"): "deletes a recovered journal file",
}


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _call_name(node: ast.Call) -> str:
    return getattr(node.func, "attr", getattr(node.func, "id", ""))


def _forbidden(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or _call_name(node) not in FORBIDDEN_CALLS:
        return False
    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
    return receiver is None or ast.unparse(receiver) not in SAFE_RECEIVERS


def _uses_flask_request(tree: ast.Module) -> bool:
    """Whether the module takes ``request`` from flask (elsewhere ``request`` is another thing,
    e.g. the ``PredictionRequest`` a model source is given)."""
    return any(isinstance(n, ast.ImportFrom) and n.module == "flask"
               and any(a.name == "request" for a in n.names) for n in ast.walk(tree))


def request_problems(tree: ast.Module, where: str) -> list[str]:
    """What a service module does with requests that it must not: read a flask request
    attribute outside ``REQUEST_ATTRIBUTES``; import pickle, marshal, shelve, dill or joblib;
    call one of ``FORBIDDEN_CALLS`` in a function not ``ALLOWED`` (and an allowed one must not
    touch ``request``)."""
    found = []
    flask_request = _uses_flask_request(tree)
    for node in ast.walk(tree):
        if (flask_request and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "request" and node.attr not in REQUEST_ATTRIBUTES):
            found.append(f"{where}:{node.lineno}: reads request.{node.attr}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            for name in names:
                if name.split(".")[0] in {"pickle", "marshal", "shelve", "dill", "joblib",
                                          "cloudpickle"}:
                    found.append(f"{where}:{node.lineno}: imports {name}")
    for function in _functions(tree):
        calls = [n for n in ast.walk(function) if _forbidden(n)]
        # an inner function is scanned on its own: count only calls outside nested defs
        nested = {id(n) for inner in ast.walk(function) if inner is not function
                  and isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
                  for n in ast.walk(inner)}
        calls = [c for c in calls if id(c) not in nested]
        if not calls:
            continue
        if (where, function.name) not in ALLOWED:
            found.extend(f"{where}:{c.lineno}: {function.name}() calls {_call_name(c)}()"
                         for c in calls)
        elif any(isinstance(n, ast.Name) and n.id == "request" for n in ast.walk(function)):
            found.append(f"{where}: {function.name}() is allowed its calls only if it never "
                         "touches the request")
    return found


def test_no_service_module_unpickles_evaluates_or_opens_request_data() -> None:
    problems = []
    for module in SERVICE_MODULES:
        path = ROOT / module
        problems += request_problems(ast.parse(path.read_text(), filename=module), module)
    assert problems == []
    assert len(SERVICE_MODULES) == len(set(SERVICE_MODULES))
    assert all((ROOT / module).exists() for module, _ in ALLOWED)


@pytest.mark.parametrize("code", [f"from flask import request\n{c}" for c in [
    "import pickle\n@api.post('/x')\ndef view():\n    return pickle.loads(request.get_data())",
    "@api.post('/x')\ndef view():\n    return eval(request.get_data())",
    "@api.get('/x')\ndef view():\n    return open(request.headers['X-Path']).read()",
    "@api.get('/x')\ndef view():\n    return send_file(request.args['path'])",
    "@api.post('/x')\ndef view():\n    return Path(request.form['f']).read_bytes()",
    "@api.post('/x')\ndef view():\n    return joblib.load(request.files['model'])",
    "def openapi_text(config):\n    return open(request.path).read()",  # allowed name, misused
    "@api.post('/x')\ndef view():\n    return yaml.unsafe_load(request.get_data())",
]])
def test_the_request_scan_catches_a_view_that_would(code: str) -> None:
    assert request_problems(ast.parse(code), "level2_devops/app.py") != []


# --- 5. models only from the configured path or registry ------------------------------------

def _assignments(tree: ast.Module, attribute: str) -> list[str]:
    """The functions that assign ``self.<attribute>``."""
    return [function.name for function in _functions(tree) for node in ast.walk(function)
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            for t in ast.walk(target)
            if isinstance(t, ast.Attribute) and t.attr == attribute
            and isinstance(t.value, ast.Name) and t.value.id == "self"]


def test_model_files_come_only_from_the_configured_path_or_registry() -> None:
    source = ast.parse((ROOT / "level2_devops/service/model_source.py").read_text())
    assert _assignments(source, "path") == ["__init__"]  # ModelFileSource(path), never changed
    loads = [c for c in ast.walk(source) if isinstance(c, ast.Call)
             and _call_name(c) == "load_model"]
    assert loads and all(ast.unparse(c.args[0]) == "self.path" for c in loads)

    serving = ast.parse((ROOT / "level4_deployment/serving.py").read_text())
    assert _assignments(serving, "tracking_uri") == ["__init__"]
    init = next(f for f in _functions(serving) if f.name == "__init__")
    assert "self.tracking_uri = settings.tracking_uri" in ast.unparse(init)
    calls = {(_call_name(c), ast.unparse(c.args[0])) for c in ast.walk(serving)
             if isinstance(c, ast.Call) and _call_name(c) in {"client_for", "load_version"}}
    assert calls == {("client_for", "self.tracking_uri"), ("load_version", "self._registry()")}


class _Marker:
    """A pickle that, when loaded, creates a file: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_request_cannot_make_the_service_load_another_model(
        linear_model_file: Path, tmp_path: Path) -> None:
    from level2_devops.app import create_app
    from level2_devops.service.model_source import ModelFileSource
    from level4_deployment.serving import APP_CONFIG

    marker = tmp_path / "unpickled"
    evil = tmp_path / "taxi-duration-v9.pkl"
    evil.write_bytes(pickle.dumps(_Marker(marker)))
    client = create_app(ModelFileSource(linear_model_file), APP_CONFIG).test_client()
    tries = [({"X-Model-Path": str(evil), "X-Model": "9", "X-Variant": "challenger"}, RIDE),
             ({}, {**RIDE, "model": str(evil)}), ({}, {**RIDE, "ride_id": str(evil)}),
             ({"Cookie": f"model={evil}"}, RIDE)]
    for headers, body in tries:
        response = client.post(f"/predict?model={evil}&path={evil}", json=body, headers=headers)
        assert response.status_code in (200, 422)
        if response.status_code == 200:
            assert response.get_json()["model_version"] == "1"
    assert not marker.exists()


# --- 6. the webhook URL only from the config file -------------------------------------------

class _Recorder(QuietHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    do_CONNECT = do_GET = do_POST  # noqa: N815 - a proxy is asked with CONNECT or GET/POST


def _recorder() -> type[http.server.BaseHTTPRequestHandler]:
    return type("Recorder", (_Recorder,), {"received": []})


def test_the_webhook_goes_only_to_the_configured_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: httpx read HTTP(S)_PROXY and ALL_PROXY from the environment, so an alert (the
    model version, the metric that failed) went to whatever proxy the shell named."""
    from level4_deployment.monitoring import notify
    from level4_deployment.monitoring_config import parse_config

    hook, proxy = _recorder(), _recorder()
    with serving(hook) as hook_url, serving(proxy) as proxy_url:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                     "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("WEBHOOK_URL", f"{proxy_url}/env")
        monkeypatch.setenv("MONITORING_WEBHOOK_URL", f"{proxy_url}/env")
        config = parse_config({"alerts": {"webhook_url": f"{hook_url}/alerts"}})
        alert = {"day": dt.date(2021, 2, 3), "metric": "mae_ratio", "value": 1.5,
                 "threshold": 1.12, "message": "mae up"}
        assert notify([alert], config, "3") == 1
    assert [(method, path) for method, path, _ in hook.received] == [("POST", "/alerts")]
    assert json.loads(hook.received[0][2])["model_version"] == "3"
    assert proxy.received == []


def test_no_cli_option_or_environment_variable_sets_the_webhook() -> None:
    from workbook.cli import app

    options = [f"{where} --{p.name}" for where, p in _all_options(typer.main.get_command(app))
               if "webhook" in (p.name or "") or any("webhook" in o for o in
                                                     getattr(p, "opts", []))]
    assert options == []
    for module in ("level4_deployment/monitoring_config.py", "level4_deployment/monitoring.py"):
        tree = ast.parse((ROOT / module).read_text())
        reads = [n.lineno for n in ast.walk(tree)
                 if (isinstance(n, ast.Attribute) and n.attr in {"environ", "getenv"})]
        assert reads == [], f"{module} reads the environment at lines {reads}"
    uses = [str(path.relative_to(ROOT)) for path, tree in _sources()
            if any(isinstance(n, ast.Attribute) and n.attr == "webhook_url"
                   for n in ast.walk(tree))]
    assert sorted(uses) == ["level4_deployment/monitoring.py",
                            "level4_deployment/monitoring_config.py"]
