"""Versioned model files and their metadata: versions, atomic writes, content, clear errors."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sklearn

from level2_devops.metadata import (
    REQUIRED_KEYS,
    build_metadata,
    check_metadata,
    git_commit,
    library_versions,
)
from level2_devops.model_store import (
    MODEL_NAME,
    latest_model,
    list_models,
    load_model,
    metadata_path,
    next_version,
    save_model,
)
from level2_devops.training import fit_model
from taxi_common.errors import BadInputError
from taxi_common.prepare import FEATURE_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline(prepared_trips):
    """A small fitted linear pipeline."""
    return fit_model("linear", prepared_trips)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- versions -------------------------------------------------------------------------------------

def test_versions_start_at_one_and_increment(pipeline, tmp_path) -> None:
    models = tmp_path / "models"
    assert next_version(models) == 1  # a missing folder is an empty one
    paths = [save_model(pipeline, {"run": i}, models) for i in range(3)]
    assert [p.name for p in paths] == [f"{MODEL_NAME}-v{i}.pkl" for i in (1, 2, 3)]
    assert _files(models) == sorted([p.name for p in paths] + [f"{p.stem}.json" for p in paths])
    assert next_version(models) == 4


def test_next_version_follows_the_highest_and_ignores_other_files(tmp_path) -> None:
    for name in (f"{MODEL_NAME}-v2.pkl", f"{MODEL_NAME}-v10.pkl", f"{MODEL_NAME}-v11.json",
                 f"{MODEL_NAME}-v99.txt", "other-v500.pkl", f"{MODEL_NAME}-vx.pkl"):
        (tmp_path / name).write_bytes(b"")
    assert next_version(tmp_path) == 12  # a metadata file alone already claims its version


def test_latest_and_list_models(pipeline, tmp_path) -> None:
    with pytest.raises(BadInputError,
                       match=r"no model file taxi-duration-v\*\.pkl in .*level2 train"):
        latest_model(tmp_path)
    first = save_model(pipeline, {}, tmp_path)
    second = save_model(pipeline, {}, tmp_path)
    assert list_models(tmp_path) == [first, second]
    assert latest_model(tmp_path) == second


def test_concurrent_saves_get_distinct_versions(pipeline, tmp_path) -> None:
    paths: list[Path] = []
    barrier = threading.Barrier(8)

    def save(i: int) -> None:
        barrier.wait()
        paths.append(save_model(pipeline, {"writer": i}, tmp_path))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in paths) == sorted(f"{MODEL_NAME}-v{i}.pkl" for i in range(1, 9))
    writers = set()
    for path in paths:
        _, meta = load_model(path)
        assert meta["version"] == path.stem.rsplit("-", 1)[1]
        writers.add(meta["writer"])
    assert writers == set(range(8))


# --- atomic writes --------------------------------------------------------------------------------

def test_a_save_leaves_no_temporary_files(pipeline, tmp_path) -> None:
    save_model(pipeline, {}, tmp_path)
    assert not [name for name in _files(tmp_path) if name.startswith(".")]


def test_a_failed_save_leaves_nothing_behind(tmp_path) -> None:
    unpicklable = threading.Lock()
    with pytest.raises(TypeError):
        save_model(unpicklable, {"a": 1}, tmp_path)  # type: ignore[arg-type]
    assert _files(tmp_path) == []
    assert next_version(tmp_path) == 1


#: Run save_model with a file-size limit that the metadata JSON fits under and the model does not:
#: the kernel then refuses the model write (EFBIG) after the version is claimed, as a full disk
#: would. Python ignores SIGXFSZ, so the write raises OSError instead of killing the process.
_SAVE_UNDER_A_FILE_SIZE_LIMIT = """
import pickle, resource, sys
from pathlib import Path
from level2_devops.model_store import save_model
from taxi_common.errors import WorkbookError
pipeline = pickle.loads(Path(sys.argv[1]).read_bytes())
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_model(pipeline, {"note": "x" * 100}, Path(sys.argv[2]))
except WorkbookError as exc:
    print(f"error: {exc}")
    sys.exit(2)
"""


def test_a_model_write_failing_after_the_claim_releases_the_version(pipeline, tmp_path) -> None:
    models = tmp_path / "models"
    pickled = tmp_path / "pipeline.pkl"
    pickled.write_bytes(pickle.dumps(pipeline, protocol=5))
    limit = 1024  # the metadata JSON (about 200 bytes) fits, the pickled model does not
    assert len(pickled.read_bytes()) > 2 * limit
    result = subprocess.run([sys.executable, "-c", _SAVE_UNDER_A_FILE_SIZE_LIMIT, str(pickled),
                             str(models), str(limit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith(f"error: could not write model file {models}/{MODEL_NAME}-v1.pkl")
    assert "File too large" in message and "nothing was saved" in message
    assert "\n" not in message
    assert _files(models) == []  # no orphan metadata claiming v1, no temporary file
    assert next_version(models) == 1
    path = save_model(pipeline, {}, models)
    assert path.name == f"{MODEL_NAME}-v1.pkl"
    assert _files(models) == [f"{MODEL_NAME}-v1.json", f"{MODEL_NAME}-v1.pkl"]
    assert load_model(path)[1]["version"] == "v1"


# --- content --------------------------------------------------------------------------------------

def test_save_and_load_round_trip(pipeline, prepared_trips, tmp_path) -> None:
    path = save_model(pipeline, {"model": "linear", "metrics": {"val_rmse": 7.5}}, tmp_path)
    loaded, meta = load_model(path)
    x = prepared_trips[list(FEATURE_COLUMNS)]
    np.testing.assert_array_equal(loaded.predict(x), pipeline.predict(x))
    assert meta == {"model": "linear", "metrics": {"val_rmse": 7.5}, "version": "v1",
                    "model_file": path.name}
    assert json.loads(metadata_path(path).read_text()) == meta
    assert metadata_path(path) == path.with_suffix(".json")
    # ordinary files (like the data cache and release bundles), and no temporary file left
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        path.name: 0o644, metadata_path(path).name: 0o644}


def test_save_does_not_change_the_callers_metadata(pipeline, tmp_path) -> None:
    meta = {"model": "linear"}
    save_model(pipeline, meta, tmp_path)
    assert meta == {"model": "linear"}


def test_build_metadata_records_what_made_the_model() -> None:
    meta = build_metadata(model="ridge", params={"alpha": 0.5},
                          data={"source": "synthetic", "train": {"rows": 10}},
                          metrics={"train_rmse": 1, "val_rmse": np.float64(2.5)},
                          extra={"fit_seconds": 0.1})
    assert check_metadata(meta) is meta
    assert set(REQUIRED_KEYS) <= set(meta)
    assert meta["model"] == "ridge" and meta["params"] == {"alpha": 0.5}
    assert meta["metrics"] == {"train_rmse": 1.0, "val_rmse": 2.5}
    assert all(type(v) is float for v in meta["metrics"].values())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["created"])
    assert meta["libraries"]["scikit-learn"] == sklearn.__version__
    assert meta["libraries"]["python"].startswith("3.11")
    assert meta["fit_seconds"] == 0.1
    json.dumps(meta)  # JSON-serialisable as it is


def test_check_metadata_names_the_missing_keys() -> None:
    with pytest.raises(BadInputError, match="lacks .*metrics"):
        check_metadata({"model": "linear"}, "taxi-duration-v1.json")


def test_library_versions_says_none_for_an_absent_library() -> None:
    versions = library_versions(("numpy", "no-such-distribution-xyz"))
    assert versions["numpy"] == np.__version__
    assert versions["no-such-distribution-xyz"] is None


def test_git_commit_inside_and_outside_a_checkout(tmp_path) -> None:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not running from a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit(REPO_ROOT) or "")
    assert git_commit(tmp_path) is None


# --- clear errors ---------------------------------------------------------------------------------

def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_loading_a_missing_model_file_says_how_to_get_one(tmp_path) -> None:
    with pytest.raises(BadInputError) as info:
        load_model(tmp_path / "taxi-duration-v7.pkl")
    message = _one_line(info)
    assert "taxi-duration-v7.pkl does not exist" in message and "level2 train" in message


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"\x80\x05\x95garbage"])
def test_loading_a_corrupt_model_file_is_one_clear_line(tmp_path, content) -> None:
    path = tmp_path / "taxi-duration-v1.pkl"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as info:
        load_model(path)
    assert f"model file {path} cannot be read" in _one_line(info)


def test_loading_a_truncated_model_file_is_one_clear_line(pipeline, tmp_path) -> None:
    path = save_model(pipeline, {}, tmp_path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(BadInputError, match="cannot be read.*retrain") as info:
        load_model(path)
    _one_line(info)


def test_loading_a_pickle_that_is_no_model_is_refused(tmp_path) -> None:
    path = tmp_path / "taxi-duration-v1.pkl"
    path.write_bytes(pickle.dumps({"coef": [1, 2]}))
    with pytest.raises(BadInputError, match="does not hold a model"):
        load_model(path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_loading_with_corrupt_metadata_is_one_clear_line(pipeline, tmp_path, content) -> None:
    path = save_model(pipeline, {}, tmp_path)
    metadata_path(path).write_text(content)
    with pytest.raises(BadInputError, match="metadata file .*taxi-duration-v1.json") as info:
        load_model(path)
    _one_line(info)


def test_a_model_without_metadata_still_loads(pipeline, tmp_path) -> None:
    path = save_model(pipeline, {}, tmp_path)
    metadata_path(path).unlink()
    _, meta = load_model(path)
    assert meta == {"version": path.stem}
