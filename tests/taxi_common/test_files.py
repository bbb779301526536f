"""``files.atomic_write``: the target appears whole, or stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxi_common.files import atomic_write


def test_file_appears_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    with atomic_write(target) as (out, tmp):
        out.write(b"data")
        assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_an_error_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as (out, _):
        out.write(b"half")
        raise RuntimeError("cut")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
