"""What would break on a GPU, tested on the CPU: a checkpoint whose tensors arrive on another device than the CPU's
random generators (resume), the current CUDA device of ``--device cuda:N`` (previews, exports and the benchmark follow
it), and the CPU pinning of the suite itself (tests/conftest.py)."""
import argparse
import contextlib
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, main_in_process, tiny_digits_config, write_yaml

from configs import config_from_dict


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_onto_another_device_than_the_cpu_generators(tmp_path, capfd):
    """Training on device D (``meta`` here: a device that is not the CPU and needs no hardware) must restore the
    checkpoint's random states, which torch keeps on the CPU: loading the checkpoint with map_location=D made them
    D tensors, and ``torch.Generator.set_state`` refused them with a TypeError traceback."""
    from runners import AnnealRunner
    from training.setup import setup_training
    run = tmp_path / "run"
    cfg = tiny_digits_config(training={"n_iters": 2, "snapshot_freq": 1, "test_freq": 100})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / "r.yml", cfg), "--doc", "r", "--run",
                           str(run), "--device", "cpu")[0] == 0
    config = config_from_dict(cfg)
    args = argparse.Namespace(seed=1234, run=str(run), resume_training=True, log=str(run / "logs" / "r"),
                              tb=str(run / "tensorboard" / "r"))
    saved = torch.load(run / "logs" / "r" / "checkpoint.pth", weights_only=True)["rng"]["torch"]
    torch.manual_seed(0)
    s = setup_training(args, config, torch.device("meta"), AnnealRunner.build_model(config))
    s.writer.close()
    assert s.start_step == 2
    assert next(s.model.parameters()).device.type == "meta"
    assert torch.equal(torch.get_rng_state(), saved)            # the run's own random state, restored


class FakeCuda:
    """The parts of torch.cuda that device selection and random-state forking use, for a machine with 2 GPUs."""

    def __init__(self):
        self.current = 0
        self.set_calls = []

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def device_count(self):
        return 2

    def set_device(self, device):
        index = device.index if isinstance(device, torch.device) else int(device)
        self.set_calls.append(index)
        self.current = index

    def current_device(self):
        return self.current


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    for name in ("is_available", "is_initialized", "device_count", "set_device", "current_device"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    forked = []

    @contextlib.contextmanager
    def fork_rng(devices=None, enabled=True, **kwargs):
        forked.append(list(devices))
        yield
    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: None)
    fake.forked = forked
    return fake


@pytest.mark.parametrize("name, index", [("cuda:1", 1), ("cuda", 0)])
def test_device_cuda_n_becomes_the_current_device(fake_cuda, name, index):
    from training.distributed import pick_device
    device = pick_device(name)
    assert device == torch.device("cuda", index) and fake_cuda.set_calls == [index]


def test_previews_and_exports_fork_the_generator_of_the_training_gpu(fake_cuda, tmp_path):
    """Previews and export batches draw on a fork of the random generators; on cuda:1 that must be GPU 1's, or the
    training noise of GPU 1 is disturbed by the preview."""
    import numpy as np

    from evaluation.export import export_batches
    from training.distributed import pick_device
    from training.loop import _preview
    pick_device("cuda:1")
    model = torch.nn.Linear(2, 2)
    _preview(lambda m, step, writer: None, model, 3, None)
    (tmp_path / "batches").mkdir()
    export_batches(lambda n: np.zeros((n, 2, 2, 1), np.uint8), 4, 2, 0, tmp_path, progress=False)
    assert fake_cuda.forked == [[1], [1], [1]]


def test_the_benchmark_synchronizes_the_device_it_times(monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    bench.sync(torch.device("cuda", 1))
    bench.sync(torch.device("cpu"))
    assert synced == [torch.device("cuda", 1)]


def test_the_suite_runs_on_the_cpu_unless_a_test_is_a_cuda_test():
    """tests/conftest.py hides CUDA from every test not marked ``cuda``: in this process (the default device of
    main.py is the CPU) and in the subprocesses the tests start (CUDA_VISIBLE_DEVICES is empty)."""
    from training.distributed import pick_device
    assert not torch.cuda.is_available() and pick_device(None) == torch.device("cpu")
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_device_check_lists_its_steps_on_a_cpu(tmp_path):
    """``bash benchmarks/gpu_check.sh --dry-run`` runs anywhere: every step with its time limit and command, within
    8 minutes in all, nothing run and nothing written; an unknown option is one line and exit 2."""
    import re
    env = dict(os.environ, OUT=str(tmp_path / "out"))
    p = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    steps = re.findall(r"^\[(\w+)\] \(at most (\d+) s\)\n    (.+)$", p.stdout, flags=re.M)
    assert [s[0] for s in steps] == ["env", "tests", "cli", "bench", "compile", "export"]
    total = sum(int(s[1]) for s in steps)
    assert total <= 480 and p.stdout.rstrip().endswith(f"dry run: 6 steps, at most {total} s in all; nothing was run")
    commands = dict((s[0], s[2]) for s in steps)
    assert "-m cuda" in commands["tests"] and "tests/test_cuda.py" in commands["tests"]
    for flag in ("--resume_training", "--test", "--eval", "--compare", "s_$s.yml", "--device cuda"):
        assert flag in commands["cli"], flag
    assert "euler_ancestral" in commands["cli"]     # the study's fastest sampler at the paper's quality
    assert "--compile" in commands["compile"] and "--export 50000 --export-nfe 20 50 100" in commands["export"]
    assert "--settings mnist cifar10" in commands["bench"]
    assert not (tmp_path / "out").exists()
    bad = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--nope"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown option --nope")


def test_the_device_check_inputs_are_valid_configs_and_a_scripted_extractor(tmp_path):
    import yaml

    from configs import config_from_dict
    from evaluation import inception_features
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check_setup
    gpu_check_setup.main(tmp_path)
    train, more = (config_from_dict(yaml.safe_load((tmp_path / f).read_text())) for f in ("train.yml", "more.yml"))
    assert (train.training.n_iters, more.training.n_iters) == (200, 300) and train.data.dataset == "DIGITS"
    for name in gpu_check_setup.SAMPLERS:
        overlay = yaml.safe_load((tmp_path / f"s_{name}.yml").read_text())
        config_from_dict({**yaml.safe_load((tmp_path / "train.yml").read_text()), **overlay})
    extractor = inception_features(weights=train.eval.inception_weights)
    assert extractor(torch.zeros(2, 8, 8, 1, dtype=torch.uint8)).shape == (2, 2048)
