import errno
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
LOSS_LINE = re.compile(r"step: (\d+), (loss|test_dsm_loss|test_loss): (\S+)$")
SHARED = REPO.parent / "shared"


_CUDA_IS_AVAILABLE = torch.cuda.is_available
HAS_CUDA = _CUDA_IS_AVAILABLE()
_VISIBLE = os.environ.get("CUDA_VISIBLE_DEVICES")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: a CUDA test: it runs on a GPU and is skipped without one; every other "
                                       "test runs on the CPU, also on a machine with a GPU")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def cpu_only():
    """The suite runs on the CPU: CUDA is hidden from this process (``torch.cuda.is_available()`` is False, so
    main.py's default device is the CPU) and from every subprocess (CUDA_VISIBLE_DEVICES is empty).  Only tests marked
    ``cuda`` see the GPU, through the ``cuda`` fixture."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CUDA_VISIBLE_DEVICES", "")
    patch.setattr(torch.cuda, "is_available", lambda: False)
    yield
    patch.undo()


@pytest.fixture
def cuda(monkeypatch):
    """For tests marked ``cuda``: the GPU made visible again (in this process and its subprocesses); the device."""
    monkeypatch.setattr(torch.cuda, "is_available", _CUDA_IS_AVAILABLE)
    if _VISIBLE is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", _VISIBLE)
    return torch.device("cuda", 0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for in-process tests: tiny networks gain nothing from two, and on a busy 2-core machine
    two OpenMP threads make a tiny step up to 100x slower.  (Subprocesses get OMP_NUM_THREADS=1 from run_main.)"""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared():
    """../shared (reference checkpoints and real data); present in CI here, absent on users' machines."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (it exists only in the project's CI)")
    return SHARED


def tiny_digits_config(**overrides):
    """A tiny AnnealRunner config on the real digits: ngf 8, a handful of steps."""
    cfg = {
        "training": {"batch_size": 16, "n_iters": 6, "snapshot_freq": 3, "test_freq": 2, "num_workers": 0,
                     "log_freq": 1},
        "data": {"dataset": "DIGITS", "image_size": 8, "channels": 1},
        "model": {"ngf": 8, "num_classes": 4, "sigma_begin": 1.0, "sigma_end": 0.05},
        "optim": {"lr": 0.001},
        "sampling": {"n_samples": 4, "n_steps_each": 3, "gif_every": 2},
    }
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture
def write_config(tmp_path):
    def write(cfg, name="tiny.yml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write


def write_yaml(path, cfg):
    """Write ``cfg`` as YAML to ``path``; returns the path as a string (for argv)."""
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def main_in_process(capfd, *argv):
    """``python main.py ARGV`` in this process; returns (exit code, stderr lines)."""
    import main as cli
    capfd.readouterr()
    rc = cli.main([str(a) for a in argv])
    return rc, capfd.readouterr().err.strip().splitlines()


def run_main(args, cwd, timeout=600, env=None):
    """Run ``python main.py ARGS`` in a subprocess from ``cwd``; returns the CompletedProcess."""
    import subprocess
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def logged_losses(log_dir):
    """{(step, 'loss' | 'test_dsm_loss' | 'test_loss'): value} from a run's stdout.txt (full-precision repr);
    a step logged twice (a re-run after a resume) keeps its last value."""
    out = {}
    for line in (Path(log_dir) / "stdout.txt").read_text().splitlines():
        m = LOSS_LINE.search(line)
        if m:
            out[int(m[1]), m[2]] = float(m[3])
    return out


class FullFile:
    """An open file on a full disk: the first write puts 3 bytes down, then fails with ENOSPC."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data)[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(when)``: from now on, a write through the one atomic write (atomic.py) to a path for which
    ``when(path)`` is true fails with ENOSPC after a few bytes, as on a full disk."""
    import builtins

    import atomic
    real_open, rules = builtins.open, []

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullFile(f) if "w" in mode and any(rule(Path(path)) for rule in rules) else f
    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    return rules.append


@pytest.fixture(scope="module")
def tiny_sampling_run(tmp_path_factory):
    """A tiny digits AnnealRunner run 'd' (6 steps, ngf 4, chains of 2 steps per level) under the returned folder,
    the ``--run`` of the commands that test it."""
    import main as cli
    root = tmp_path_factory.mktemp("tiny")
    cfg = write_yaml(root / "tiny.yml", tiny_digits_config(model={"ngf": 4}, sampling={"n_steps_each": 2,
                                                                                       "n_samples": 4}))
    assert cli.main(["--config", str(cfg), "--doc", "d", "--run", str(root / "run")]) == 0
    return root / "run"
