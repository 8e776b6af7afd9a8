"""A full disk while a command writes its outputs: one error line and exit 1, no partial or 0-byte file and no
temporary file left, and the outputs written before stay whole.  The disk fills up for one file name at a time:
its writes through the one atomic write (atomic.py) fail with ENOSPC after a few bytes, as a real full disk does."""
import json
from pathlib import Path

import pytest
from conftest import main_in_process
from test_eval_cli import evaluate

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run with the stand-in Inception
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
NO_SPACE = "No space left on device"      # os.strerror(errno.ENOSPC)


def file_called(name):
    """The temporary files :func:`atomic.atomic_write` writes ``name`` through."""
    return lambda path: path.name.startswith(f".{name}.tmp")


def assert_clean(folder, missing):
    """No trace of ``missing``, no temporary or empty file in ``folder``."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    assert not (Path(folder) / missing).exists()
    assert not [p for p in files if p.name.startswith(".")], files
    assert not [p for p in files if p.stat().st_size == 0], files


@pytest.mark.parametrize("name", ["movie.gif", "samples.pth", "samples.png"])
def test_test_on_a_full_disk(tiny_sampling_run, tmp_path, capfd, full_disk, name):
    full_disk(file_called(name))
    out = tmp_path / "out"
    rc, err = main_in_process(capfd, "--test", "--doc", "d", "--run", tiny_sampling_run, "-o", out)
    assert rc == 1 and err[-1] == f"error: cannot write {out / name}: {NO_SPACE}", err
    assert not any(line.startswith("Traceback") for line in err)
    assert_clean(out, name)
    written = ["samples.png", "samples.pth", "movie.gif"]
    for before in written[:written.index(name)]:
        assert (out / before).stat().st_size > 0


def test_compare_on_a_full_disk(tiny_sampling_run, tmp_path, capfd, full_disk):
    full_disk(file_called("comparison.png"))
    out = tmp_path / "cmp"
    rc, err = main_in_process(capfd, "--compare", "--doc", "d", "--run", tiny_sampling_run, "-o", out)
    assert rc == 1 and err[-1] == f"error: cannot write {out / 'comparison.png'}: {NO_SPACE}", err
    assert_clean(out, "comparison.png")
    assert json.loads((out / "comparison.json").read_text())["rows"]         # written before, whole


@pytest.mark.parametrize("name", ["metrics.json", "neighbours.json", "neighbours.png"])
def test_eval_on_a_full_disk(tiny_run, tmp_path, capfd, full_disk, name):
    full_disk(file_called(name))
    out = tmp_path / "ev"
    capfd.readouterr()
    assert evaluate(tiny_run, out) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {out / name}: {NO_SPACE}", err
    assert_clean(out, name)
    assert (out / "samples.npz").stat().st_size > 0
    if name != "metrics.json":
        assert json.loads((out / "metrics.json").read_text())["fid"] > 0
