"""Whole-or-nothing files (`store/atomic_files.py`): what readers and listers of the directory see."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from intelligence_assets.store.atomic_files import PARTIAL_SUFFIX, write_atomically, written_beside


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "nested" / "object.bin"
    write_atomically(path, b"first", durable=durable)
    write_atomically(path, b"second, longer", durable=durable)
    assert path.read_bytes() == b"second, longer"
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["object.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "object.bin"
    write_atomically(path, b"kept")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"kept"
    assert [entry.name for entry in tmp_path.iterdir()] == ["object.bin"]


def test_a_temporary_file_sits_beside_its_final_name_marked_partial(tmp_path: Path) -> None:
    path = tmp_path / "object.bin"
    first, second = written_beside(path, b"a"), written_beside(path, b"b")
    assert first != second and first.parent == second.parent == tmp_path
    assert all(temporary.name.endswith(PARTIAL_SUFFIX) for temporary in (first, second))
    assert not path.exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_files_take_the_umasks_permissions(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "object.bin"
    previous = os.umask(umask)
    try:
        write_atomically(path, b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
