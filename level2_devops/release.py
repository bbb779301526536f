"""Release automation, level 2's DevOps: ``make release`` = ``python -m level2_devops.release``.

Steps, in order; the first that fails stops the release with one line naming it and the fix:

1. lint — ``ruff check`` on the project;
2. tests — ``pytest`` (``--skip-tests`` for speed, ``--pytest-args`` for a subset);
3. build — wheel and sdist with ``python -m build --no-isolation`` (setuptools is in the venv, so
   no network), from a clean copy of the source tree so a stale ``build/`` folder never leaks in;
4. check — the wheel holds every package and its package data, and no tests or workbook state;
5. bundle — the model file and its metadata in ``dist/taxi-duration-v<N>.tar.gz`` with a
   ``MANIFEST.json`` of each member's sha256 (:func:`verify_bundle` checks one).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from taxi_common.errors import WorkbookError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_NAME = "MANIFEST.json"
#: Never copied into the build tree: state, caches, environments and earlier outputs.
_NOT_SOURCE = (".git", ".venv", "venv", ".workbook", "dist", "build", "*.egg-info", "__pycache__",
               ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "*.parquet", "mlflow.db",
               "mlruns")
#: Top-level folders that must never end up in the wheel.
FORBIDDEN_IN_WHEEL = ("tests/", ".workbook/", "benchmarks/", "scripts/")

Echo = Callable[[str], None]


class ReleaseError(WorkbookError):
    """A release step failed; the message names the step and how to fix it."""


@dataclass(frozen=True)
class ReleaseOptions:
    """What ``python -m level2_devops.release`` does, and where."""

    root: Path = PROJECT_ROOT
    dist_dir: Path | None = None  # default: <root>/dist
    skip_lint: bool = False
    skip_tests: bool = False
    pytest_args: tuple[str, ...] = ()
    bundle: bool = True
    model: Path | None = None  # default: the latest model in settings.models_dir

    @property
    def dist(self) -> Path:
        """Where the wheel, the sdist and the bundle go."""
        return Path(self.dist_dir) if self.dist_dir else Path(self.root) / "dist"


# --- helpers --------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(step: str, command: list[str], cwd: Path, fix: str, *, quiet: bool = False) -> None:
    """Run ``command``; its output goes to the terminal (or, when ``quiet``, only on failure)."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=quiet, text=True)
    except OSError as exc:
        raise ReleaseError(f"release step {step!r} failed: cannot run {command[0]} "
                           f"({exc})") from exc
    if done.returncode != 0:
        if quiet:
            tail = (done.stdout + done.stderr).strip().splitlines()[-30:]
            sys.stderr.write("\n".join(tail) + "\n")
        raise ReleaseError(f"release step {step!r} failed: `{' '.join(command[2:4])}` exited with "
                           f"{done.returncode}; {fix}")


def _project_config(root: Path) -> dict[str, Any]:
    """``pyproject.toml`` of the project at ``root``."""
    path = Path(root) / "pyproject.toml"
    if not path.is_file():
        raise ReleaseError(f"no pyproject.toml in {root}: run the release from the project root")
    return tomllib.loads(path.read_text())


# --- steps ----------------------------------------------------------------------------------------

def lint(options: ReleaseOptions, echo: Echo) -> None:
    """``ruff check`` on the whole project."""
    echo(f"ruff check {options.root}")
    _run("lint", [sys.executable, "-m", "ruff", "check", "--quiet", str(options.root)],
         options.root, "fix the problems listed above (`ruff check --fix` fixes some)")


def run_tests(options: ReleaseOptions, echo: Echo) -> None:
    """The test suite (or the subset ``options.pytest_args`` selects)."""
    args = ["-q", *options.pytest_args]
    echo(f"pytest {' '.join(args)}")
    _run("tests", [sys.executable, "-m", "pytest", *args], options.root,
         "fix the failing tests above, or release without them with --skip-tests")


def copy_source_tree(root: Path, dest: Path) -> Path:
    """A copy of the project at ``root`` in ``dest``, without state, caches and old builds."""
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*_NOT_SOURCE), symlinks=True)
    return dest


def build(options: ReleaseOptions, echo: Echo) -> list[Path]:
    """Wheel and sdist into ``options.dist``; returns their paths."""
    dist = options.dist
    dist.mkdir(parents=True, exist_ok=True)
    version = _project_config(options.root)["project"]["version"]
    for old in [*dist.glob(f"*-{version}-*.whl"), *dist.glob(f"*-{version}.tar.gz")]:
        old.unlink()  # a release rebuilds its own version from scratch
    echo(f"python -m build --no-isolation --sdist --wheel --outdir {dist}")
    with tempfile.TemporaryDirectory(prefix="release-src-") as tmp:
        source = copy_source_tree(options.root, Path(tmp) / "src")
        _run("build", [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                       "--outdir", str(dist.resolve()), str(source)], source,
             "see the build output above (is `build` installed? run make setup)", quiet=True)
    built = sorted([*dist.glob(f"*-{version}-*.whl"), *dist.glob(f"*-{version}.tar.gz")])
    for path in built:
        echo(f"  {path.name} ({path.stat().st_size / 1024:,.0f} KiB)")
    return built


def expected_wheel_files(root: Path) -> list[str]:
    """Files the wheel must hold: each (sub)package's ``__init__.py`` and its package data, as
    ``pyproject.toml`` lists them (``[tool.setuptools]`` packages.find.include, package-data)."""
    setuptools_cfg = _project_config(root)["tool"]["setuptools"]
    patterns = setuptools_cfg["packages"]["find"]["include"]
    expected = []
    for init in sorted(Path(root).glob("*/__init__.py")):
        package = init.parent.name
        if any(fnmatch.fnmatch(package, pattern) for pattern in patterns):
            expected += [p.relative_to(root).as_posix()
                         for p in sorted(init.parent.rglob("__init__.py"))]
            for data in setuptools_cfg.get("package-data", {}).get(package, []):
                expected += [p.relative_to(root).as_posix() for p in sorted(init.parent.glob(data))]
    return expected


def check_wheel(wheel: Path, root: Path) -> list[str]:
    """Problems with ``wheel`` (empty when it is fine): missing packages or package data, files
    that must not ship, no ``mlops-levels`` console script."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next((archive.read(n).decode() for n in names
                             if n.endswith(".dist-info/entry_points.txt")), "")
    problems = [f"missing {name}" for name in expected_wheel_files(root) if name not in names]
    problems += [f"must not contain {name}" for name in sorted(names)
                 if name.startswith(FORBIDDEN_IN_WHEEL) or "/.workbook/" in name]
    if "mlops-levels = workbook.cli:main" not in entry_points:
        problems.append("no console script mlops-levels = workbook.cli:main")
    return problems


def check(options: ReleaseOptions, built: list[Path], echo: Echo) -> None:
    """The release step that runs :func:`check_wheel` on the wheel just built."""
    wheels = [p for p in built if p.suffix == ".whl"]
    if len(wheels) != 1:
        raise ReleaseError(f"release step 'check' failed: expected one wheel in {options.dist}, "
                           f"found {len(wheels)}; rerun the release")
    echo(f"checking {wheels[0].name}: packages, package data, nothing extra")
    problems = check_wheel(wheels[0], options.root)
    if problems:
        raise ReleaseError(f"release step 'check' failed: the wheel {'; '.join(problems[:5])}"
                           f"{' ...' if len(problems) > 5 else ''}; fix [tool.setuptools] "
                           "in pyproject.toml")


def write_bundle(model_path: Path, dist: Path, package_version: str) -> Path:
    """``dist/<model>.tar.gz`` with the model file, its metadata JSON and a manifest of their
    sha256; written atomically. Returns the bundle's path."""
    from level2_devops.metadata import utc_now
    from level2_devops.model_store import MODEL_NAME, metadata_path, read_metadata

    model_path = Path(model_path)
    members = [model_path, metadata_path(model_path)]
    for member in members:
        if not member.is_file():
            raise ReleaseError(f"release step 'bundle' failed: {member} does not exist; train a "
                               "model with `mlops-levels level2 train` or pass --model PATH")
    manifest = {
        "model": MODEL_NAME,
        "version": read_metadata(model_path).get("version", model_path.stem),
        "package": "mlops-levels",
        "package_version": package_version,
        "created": utc_now(),
        "files": {m.name: {"sha256": sha256_file(m), "bytes": m.stat().st_size}
                  for m in members},
    }
    dist.mkdir(parents=True, exist_ok=True)
    bundle = dist / f"{model_path.stem}.tar.gz"
    fd, tmp = tempfile.mkstemp(dir=dist, prefix=f".{bundle.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as archive:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
            for member in members:
                archive.add(member, arcname=member.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return bundle


def verify_bundle(bundle: Path) -> dict[str, Any]:
    """The manifest of ``bundle`` once every member's sha256 matches it; a clear error otherwise."""
    try:
        with tarfile.open(bundle, "r:gz") as archive:
            contents = {m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                        for m in archive.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ReleaseError(f"bundle {bundle} cannot be read ({exc}); rebuild it") from exc
    if MANIFEST_NAME not in contents:
        raise ReleaseError(f"bundle {bundle} has no {MANIFEST_NAME}; rebuild it")
    try:
        manifest = json.loads(contents.pop(MANIFEST_NAME))
        listed = set(manifest["files"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ReleaseError(f"bundle {bundle}: {MANIFEST_NAME} is not a manifest of files "
                           f"({type(exc).__name__}: {exc}); rebuild it") from exc
    if set(contents) != listed:
        raise ReleaseError(f"bundle {bundle} holds {sorted(contents)} but its manifest lists "
                           f"{sorted(manifest['files'])}; rebuild it")
    for name, data in contents.items():
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
            raise ReleaseError(f"bundle {bundle}: {name} does not match its sha256; rebuild it")
    return manifest


def bundle(options: ReleaseOptions, echo: Echo) -> Path:
    """The release step that bundles the chosen (default: latest) model with its metadata."""
    from level2_devops.model_store import latest_model
    from taxi_common.settings import Settings

    try:
        model = Path(options.model) if options.model else latest_model(
            Settings.from_env().models_dir)
    except WorkbookError as exc:
        raise ReleaseError(f"release step 'bundle' failed: {exc} (or pass --no-bundle)") from exc
    echo(f"bundling {model} with its metadata")
    version = _project_config(options.root)["project"]["version"]
    path = write_bundle(model, options.dist, version)
    verify_bundle(path)
    echo(f"  {path}")
    return path


def run_release(options: ReleaseOptions, echo: Echo = print) -> list[Path]:
    """Every step in order; returns the files written to ``options.dist``."""
    steps = 2 + (not options.skip_lint) + (not options.skip_tests) + options.bundle
    counter = iter(range(1, steps + 1))

    def announce(name: str) -> None:
        echo(f"[{next(counter)}/{steps}] {name}")

    if not options.skip_lint:
        announce("lint")
        lint(options, echo)
    if not options.skip_tests:
        announce("tests")
        run_tests(options, echo)
    announce("build")
    built = build(options, echo)
    announce("check")
    check(options, built, echo)
    if options.bundle:
        announce("bundle")
        built.append(bundle(options, echo))
    return built


# --- command line ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def release(
    skip_lint: bool = typer.Option(False, "--skip-lint", help="Skip `ruff check`."),
    skip_tests: bool = typer.Option(
        False, "--skip-tests", help="Skip the test suite (faster, riskier)."),
    pytest_args: str = typer.Option(
        "", help='Arguments for pytest, for example "-m \'not slow\'" or "tests/level2".'),
    dist_dir: Path | None = typer.Option(None, help="Output folder (default: <root>/dist)."),
    model: Path | None = typer.Option(
        None, help="Model file to bundle (default: the latest in $WORKBOOK_HOME/models)."),
    make_bundle: bool = typer.Option(
        True, "--bundle/--no-bundle", help="Bundle the model (--no-bundle: the package only)."),
    root: Path = typer.Option(PROJECT_ROOT, help="Project root (holds pyproject.toml)."),
) -> None:
    """Lint, test, build the wheel and sdist, check the wheel, bundle the model: stop at the
    first failure with one line naming the step."""
    import shlex

    options = ReleaseOptions(root=root.resolve(), dist_dir=dist_dir, skip_lint=skip_lint,
                             skip_tests=skip_tests, pytest_args=tuple(shlex.split(pytest_args)),
                             bundle=make_bundle, model=model)
    try:
        built = run_release(options, echo=typer.echo)
    except WorkbookError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc
    typer.echo("released: " + ", ".join(str(p) for p in built))


if __name__ == "__main__":
    app()
