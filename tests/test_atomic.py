"""The one atomic write (atomic.py): a failed write leaves the old file and no temporary file, as one UserError;
and it is the only product module that fsyncs."""
import ast
import errno
import os
from pathlib import Path

import pytest

from atomic import atomic_write, temp_path
from errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_writes_bytes_and_callables(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one"
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two" and list(tmp_path.iterdir()) == [path]


def no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    data = b"new"
    if where == "write":
        def data(f):
            f.write(b"half")
            no_space()
    else:
        monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(UserError) as info:
        atomic_write(path, data)
    assert str(info.value) == f"cannot write {path}: No space left on device"
    assert "\n" not in str(info.value)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", no_space)
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(UserError, match=r"^cannot write checkpoint .*checkpoint\.pth: No space left on device; the "
                                        r"previous checkpoint\.pth \(if any\) is unchanged$"):
        atomic_write(path, b"x", what="checkpoint ", note=f"; the previous {path.name} (if any) is unchanged",
                     sync_folder=True)
    assert list(tmp_path.iterdir()) == []


def test_the_temp_name_is_the_one_stale_cleanup_knows(tmp_path):
    from atomic import _TEMP
    tmp = temp_path(tmp_path / "checkpoint_5.pth")
    m = _TEMP.fullmatch(tmp.name)
    assert tmp.parent == tmp_path and m[1] == "checkpoint_5.pth" and int(m[2]) == os.getpid()


def product_files():
    skip = {"tests", ".venv", "venv", ".git"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_os_fsync_is_called_in_one_module():
    def fsyncs(path):
        tree = ast.parse(path.read_text(), filename=str(path))
        return any(isinstance(n, ast.Attribute) and n.attr == "fsync" for n in ast.walk(tree))
    assert [p.relative_to(ROOT).as_posix() for p in product_files() if fsyncs(p)] == ["atomic.py"]
