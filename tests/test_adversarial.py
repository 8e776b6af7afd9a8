"""Hostile input, by class (reliability issue II): unsafe --doc and --overwrite, values out of range, allocation
failures, signals outside the training loop, non-finite weights, runs that cannot be resumed, other runs' broken
files.  Every case: one `error:` line (or the stop message), a non-zero exit, and nothing of the user's lost."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, main_in_process, tiny_digits_config, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.checkpoint import load_checkpoint


def snapshot(root):
    """{relative path: sha256} of every file under root (symlinks are not followed)."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def trained(tmp_path, capfd):
    """A finished tiny run 'old' (and a second run 'other') under tmp_path/run; returns (run, config path)."""
    run, cfg = tmp_path / "run", write_yaml(tmp_path / "tiny.yml", tiny_digits_config(model={"ngf": 4}))
    for doc in ("old", "other"):
        rc, err = main_in_process(capfd, "--config", cfg, "--doc", doc, "--run", run)
        assert rc == 0, err
    return run, cfg


# ------------------------------------------------------------------------------------ 1. --doc and --overwrite

@pytest.mark.parametrize("doc", ["", ".", "..", "a/b", "../outside", "/abs", "x\ny", "tab\there", "line\u2028sep",
                                 "nbsp\xa0", "x" * 300])
def test_doc_must_be_one_plain_name_and_nothing_is_touched(trained, tmp_path, capfd, doc):
    run, cfg = trained
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    before, before_outside = snapshot(run), snapshot(outside)
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", doc, "--run", run, "--overwrite")
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: --doc must be one plain folder name"), err
    assert len(err[0]) < 300
    assert snapshot(run) == before and snapshot(outside) == before_outside


def test_overwrite_keeps_the_old_run_until_the_new_one_fails_before_a_checkpoint(trained, tmp_path, capfd):
    """--overwrite with a config whose data is missing: the error comes after the folders were prepared; the old
    run comes back byte for byte, and no moved-aside copy is left behind."""
    run, _ = trained
    before = snapshot(run)
    bad = write_yaml(tmp_path / "bad.yml", tiny_digits_config(data={"dataset": "MNIST", "image_size": 28,
                                                               "root": str(tmp_path / "nothing"),
                                                               "download": False}, model={"ngf": 4}))
    rc, err = main_in_process(capfd, "--config", bad, "--doc", "old", "--run", run, "--overwrite")
    assert rc == 1 and err[-1].startswith("error: MNIST data not available"), err
    assert snapshot(run) == before
    assert not [p for p in run.rglob(".*replaced*")]


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(trained, tmp_path, capfd):
    run, cfg = trained
    old_ckpt = load_checkpoint(run / "logs" / "old" / "checkpoint.pth")
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "old", "--run", run, "--overwrite", "--seed", "7")
    assert rc == 0, err
    new_ckpt = load_checkpoint(run / "logs" / "old" / "checkpoint.pth")
    assert not torch.equal(old_ckpt["model"]["begin_conv.weight"], new_ckpt["model"]["begin_conv.weight"])
    assert not [p for p in run.rglob(".*replaced*")]
    assert (run / "logs" / "other" / "checkpoint.pth").is_file()            # other runs untouched


def test_overwrite_of_a_linked_run_removes_the_link_not_its_target(trained, tmp_path, capfd):
    run, cfg = trained
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("do not delete")
    (run / "logs" / "linked").symlink_to(target, target_is_directory=True)
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "linked", "--run", run, "--overwrite")
    assert rc == 0, err
    assert (target / "precious.txt").read_text() == "do not delete"
    assert (run / "logs" / "linked" / "checkpoint.pth").is_file() and not (run / "logs" / "linked").is_symlink()


# ------------------------------------------------------------------------------------ 2. values out of range

@pytest.mark.parametrize("argv, env, message", [
    (["--seed", "-1"], {}, r"error: --seed must be in \[0, 4294967295\], got -1"),
    (["--seed", str(2 ** 64)], {}, r"error: --seed must be in \[0, 4294967295\], got 18446744073709551616"),
    (["--device", "meta"], {}, r"error: --device 'meta' is not supported; use cpu, cuda or cuda:N"),
    (["--device", "cpu:3"], {}, r"error: --device 'cpu:3' is not supported; use cpu, cuda or cuda:N"),
    (["--device", "nonsense"], {}, r"error: unknown device 'nonsense'; use cpu, cuda or cuda:N"),
    ([], {"WORLD_SIZE": "two"}, r"error: environment variable WORLD_SIZE must be an integer in \[1, 1000000\], "
                                r"got 'two'"),
    ([], {"WORLD_SIZE": "2", "RANK": "5"}, r"error: environment variable RANK must be an integer in \[0, 1\], got '5'"),
])
def test_flags_and_environment_out_of_range(tmp_path, capfd, monkeypatch, argv, env, message):
    import re
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config(model={"ngf": 4}))
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "d", "--run", tmp_path / "run", *argv)
    assert rc == 1 and len(err) == 1 and re.fullmatch(message, err[0]), err
    assert not (tmp_path / "run").exists()


def test_a_network_larger_than_the_free_memory_is_refused_before_allocating(tmp_path, capfd, monkeypatch):
    """Within the config's bounds a network can still exceed this machine's memory: it is measured on the meta device
    against the memory available now (here made small) and refused, with the run folder removed again."""
    import runners.base
    monkeypatch.setattr(runners.base, "_available_bytes", lambda device: 2 ** 20)
    cfg = write_yaml(tmp_path / "big.yml", tiny_digits_config(model={"ngf": 64}))
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "big", "--run", tmp_path / "run")
    assert rc == 1 and len(err[-1]) < 300 and err[-1].startswith("error: the AnnealRunner network of this config needs ") \
        and "for its weights, gradients and Adam's two moments, more than the 0.0 GiB of memory available on cpu; " \
            "reduce model.ngf" in err[-1], err
    assert not (tmp_path / "run" / "logs" / "big").exists()


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 123 bytes"), MemoryError()])
def test_a_failed_allocation_is_one_line_and_not_called_missing_data(tmp_path, capfd, monkeypatch, error):
    import datasets.images
    import runners.anneal_runner

    def fail(*args, **kwargs):
        # runner checks build under `with torch.device("meta")`: those allocate nothing (a new tensor's device tells;
        # torch.get_default_device() does not see that context in torch 2.4)
        if torch.empty(0).device.type != "meta":
            raise error
        real_init(*args, **kwargs)
    real_init = runners.anneal_runner.CondRefineNetDilated.__init__
    cfg = write_yaml(tmp_path / "t.yml", tiny_digits_config(model={"ngf": 4}))
    monkeypatch.setattr(datasets.images, "_digits", fail)
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "data", "--run", tmp_path / "run")
    assert rc == 1 and err[-1].startswith("error: not enough memory to load DIGITS at data.image_size 8"), err
    monkeypatch.undo()
    monkeypatch.setattr(runners.anneal_runner.CondRefineNetDilated, "__init__", fail)
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "net", "--run", tmp_path / "run")
    assert rc == 1 and err[-1] == ("error: not enough memory on cpu for the AnnealRunner network of this config "
                                   "(model.ngf 4, data.image_size 8)"), err
    assert not (tmp_path / "run" / "logs" / "net").exists()


def test_inpainting_more_references_than_the_test_set_is_one_line(trained, tmp_path, capfd, monkeypatch):
    from torch.utils.data import Subset

    import commands.sample
    real = commands.sample.get_dataset
    monkeypatch.setattr(commands.sample, "get_dataset",                # a test set of 5 images
                        lambda *a: (real(*a)[0], Subset(real(*a)[1], range(5))))
    run, _ = trained
    saved = run / "logs" / "old" / "config.yml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["sampling"].update(inpainting=True, n_samples=36)                # 6 references
    saved.write_text(yaml.safe_dump(cfg))
    rc, err = main_in_process(capfd, "--test", "--doc", "old", "--run", run, "-o", tmp_path / "inp")
    assert rc == 1 and err[-1] == ("error: inpainting completes sqrt(sampling.n_samples) = 6 test images, but the "
                                   "DIGITS test set has 5; lower sampling.n_samples"), err


# ------------------------------------------------------------------------------------ 5. signals outside training

@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_signal_during_test_sampling_says_so(trained, tmp_path, name):
    run, _ = trained
    saved = run / "logs" / "old" / "config.yml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["sampling"].update(n_steps_each=100000)                          # samples for a long time
    saved.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--test", "--doc", "old", "--run", str(run),
                                 "-o", str(tmp_path / "out"), "--verbose", "warning"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 120
        while "annealed Langevin" not in (tmp_path / "stderr").read_text():     # the progress bar has started
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.05)
        proc.send_signal(getattr(signal, name))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "stderr").read_text()
    assert proc.returncode == 128 + getattr(signal, name), text
    assert text.strip().splitlines()[-1].endswith(f"stopped by {name}") and "Traceback" not in text


# ------------------------------------------------------------------------------------ 6. silent nonsense

def test_test_refuses_non_finite_weights(trained, tmp_path, capfd):
    run, _ = trained
    path = run / "logs" / "old" / "checkpoint.pth"
    state = torch.load(path, weights_only=True)
    state["model"]["begin_conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    rc, err = main_in_process(capfd, "--test", "--doc", "old", "--run", run, "-o", tmp_path / "out")
    assert rc == 1 and err[-1].startswith(f"error: checkpoint {path} holds non-finite weights (begin_conv.weight)")
    assert not any((tmp_path / "out").glob("*.png"))


def test_toy_runs_cannot_be_resumed_and_say_so(tmp_path, capfd):
    rc, err = main_in_process(capfd, "--runner", "ToyRunner", "--config", "toy.yml", "--doc", "t", "--run", tmp_path / "run",
                      "--resume_training")
    assert rc == 1 and err == ["error: ToyRunner runs cannot be resumed (they train in about a minute): start a new "
                               "run with another --doc, or --overwrite"]


def test_another_runs_unreadable_loss_log_does_not_break_scorenet_test(tmp_path, capfd):
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "s.yml", {"training": {"n_iters": 2, "batch_size": 8, "num_workers": 0, "test_freq": 1,
                                                  "snapshot_freq": 2},
                                     "data": {"dataset": "DIGITS", "image_size": 8}, "model": {"nef": 8, "ndf": 8}})
    for doc in ("good", "broken"):
        rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--config", cfg, "--doc", doc, "--run", run)
        assert rc == 0, err
    (run / "logs" / "broken" / "losses.csv").write_bytes(b"\xff\xfe\x00 not text")
    rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--test", "--doc", "good", "--run", run,
                      "-o", tmp_path / "out")
    assert rc == 0, err
    assert any("left out of the figure: cannot read loss log" in line for line in err)
    assert (tmp_path / "out" / "figure1.png").is_file() and (tmp_path / "out" / "test_loss.json").is_file()


def test_a_diverging_chain_is_reported_not_written(trained, tmp_path, capfd):
    run, _ = trained
    saved = run / "logs" / "old" / "config.yml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["sampling"].update(step_lr=1e38)                     # the steps overflow float32: inf, then nan
    saved.write_text(yaml.safe_dump(cfg))
    rc, err = main_in_process(capfd, "--test", "--doc", "old", "--run", run, "-o", tmp_path / "out")
    assert rc == 1 and err[-1] == ("error: sampling diverged: 4 of 4 samples hold non-finite values; nothing written "
                                   "(a smaller sampling.step_lr may help)"), err
    assert not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------ property: any flag value

FLAG_VALUES = {
    "--doc": st.text(max_size=300),
    "--seed": st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
    "--device": st.one_of(st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:99", "meta", "mps", "xpu", "cpu:1", "",
                                           "vulkan", "cuda:-1", "cuda:x"]), st.text(max_size=20)),
    "--runner": st.one_of(st.sampled_from(["AnnealRunner", "ToyRunner", "ScoreNetRunner"]), st.text(max_size=30)),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(sorted(FLAG_VALUES)), data=st.data(), mode=st.sampled_from(["--test", "--eval",
                                                                                         "--resume_training"]))
def test_any_flag_value_gives_one_error_line_and_creates_nothing(tmp_path, capfd, flag, data, mode):
    """A run that does not exist, with one flag set to an arbitrary value: whatever the value, exactly one
    `error:` line (a flag error, or 'no trained run' / 'cannot resume'), exit 1, and no file created."""
    value = data.draw(FLAG_VALUES[flag])
    if "\x00" in value or (value.startswith("-") and flag != "--seed"):
        return                                  # not passable as one argv element / taken by argparse as a flag
    run = tmp_path / "prop"
    argv = ["--doc", "missing", "--run", str(run), mode, "-o", str(tmp_path / "out"), flag, value]
    try:
        rc, err = main_in_process(capfd, *argv)
    except SystemExit as e:                     # argparse: a value it cannot parse (e.g. --seed 1.5): exit 2, usage
        assert e.code == 2
        return
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 400, (argv, err)
    assert not run.exists() and not (tmp_path / "out").exists()
