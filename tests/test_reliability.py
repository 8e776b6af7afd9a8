"""Reliability: atomic checkpoints, exact resume, clean stops on SIGINT/SIGTERM, non-finite losses, safe loading.

Most runs call ``main.main`` in-process on the real scikit-learn digits (tiny networks, a few steps); the signal tests
signal a real ``python main.py`` subprocess.
"""
import hashlib
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, logged_losses, main_in_process, tiny_digits_config, write_yaml

import main as cli
from configs import config_from_dict, load_config
from errors import UserError
from training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from training.loop import Objective, train_loop
from training.setup import TrainSetup


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ 1. atomic checkpoints

def test_checkpoint_holds_full_state_and_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    import numpy as np
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    cfg = config_from_dict(tiny_digits_config())
    path = tmp_path / "checkpoint.pth"
    np.random.seed(7)
    save_checkpoint([path], model=model, optimizer=opt, step=5, sigmas=torch.tensor([1.0, 0.1]), config=cfg)
    good = sha(path)
    state = load_checkpoint(path)
    assert state["step"] == 5 and state["config"]["model"]["ngf"] == 8
    assert torch.equal(state["sigmas"], torch.tensor([1.0, 0.1]))
    assert torch.equal(state["model"]["weight"], model.weight)
    assert state["optimizer"]["state"][0]["step"] == 1
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["rng"]["numpy"]["keys"][0] == np.random.get_state()[1][0]
    if torch.cuda.is_available():
        assert "cuda" in state["rng"]

    # a crash in the middle of writing: the previous checkpoint.pth is intact and no temporary file is left
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(UserError, match=r"cannot write checkpoint .*checkpoint.pth: No space left on device"):
        save_checkpoint([path], model=model, optimizer=opt, step=6, sigmas=None, config=cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sha(path) == good and load_checkpoint(path)["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


# ------------------------------------------------------------------------------------------------ 2. exact resume

def test_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path, capfd):
    """8 steps straight == 4 steps, then --resume_training to 8: the same losses (train and test), bit for bit."""
    run = str(tmp_path / "run")
    cfg = tiny_digits_config(training={"n_iters": 8, "snapshot_freq": 100, "test_freq": 3})
    c8 = write_yaml(tmp_path / "c8.yml", cfg)
    cfg["training"]["n_iters"] = 4
    c4 = write_yaml(tmp_path / "c4.yml", cfg)

    assert main_in_process(capfd, "--config", c8, "--doc", "straight", "--run", run)[0] == 0
    assert main_in_process(capfd, "--config", c4, "--doc", "resumed", "--run", run)[0] == 0
    assert load_checkpoint(Path(run, "logs", "resumed", "checkpoint.pth"))["step"] == 4
    # another --seed on resume changes nothing: the random states and the data order come from the checkpoint
    rc, err = main_in_process(capfd, "--config", c8, "--doc", "resumed", "--run", run, "--resume_training",
                              "--seed", "99")
    assert rc == 0, err

    straight, resumed = logged_losses(Path(run, "logs", "straight")), logged_losses(Path(run, "logs", "resumed"))
    span = [(s, "loss") for s in range(5, 9)] + [(6, "test_dsm_loss")]
    assert all(k in straight for k in span) and len(straight) == 8 + 2
    assert {k: resumed[k] for k in span} == {k: straight[k] for k in span}        # exact float equality
    assert straight[5, "loss"] != straight[6, "loss"]                             # real, changing numbers

    a = load_checkpoint(Path(run, "logs", "straight", "checkpoint.pth"))
    b = load_checkpoint(Path(run, "logs", "resumed", "checkpoint.pth"))
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["optimizer"]["state"][i]["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
               for i in a["optimizer"]["state"])
    assert a["streams"] == b["streams"]
    # the run's config.yml now describes what its checkpoint was trained with
    assert load_config(Path(run, "logs", "resumed", "config.yml")).training.n_iters == 8


# ---------------------------------------------------------------------------------------------- 3. SIGINT/SIGTERM

def wait_for_step(log, step, alive, deadline=120):
    """Poll <log>/stdout.txt until step ``step`` has been logged (the signal handler is active from then on)."""
    stop = time.monotonic() + deadline
    while not (log / "stdout.txt").is_file() or f"step: {step}, loss" not in (log / "stdout.txt").read_text():
        assert alive(), "training ended before it was signalled"
        assert time.monotonic() < stop, "training made no progress"
        time.sleep(0.05)


def check_stopped_and_resume(capfd, tmp_path, cfg, run, name, rc, err):
    """Exit code 128+signal, the message as the last line, a checkpoint of the finished step; then resume."""
    log = run / "logs" / name
    signum = signal.Signals[name]
    assert rc == 128 + signum, err
    m = re.fullmatch(rf"stopped by {name} after step (\d+); checkpoint saved to (\S+); continue with "
                     rf"--resume_training", err.strip().splitlines()[-1])
    assert m, err
    step = int(m[1])
    assert step >= 2 and Path(m[2]) == log / "checkpoint.pth"
    assert load_checkpoint(log / "checkpoint.pth")["step"] == step
    assert max(s for s, _ in logged_losses(log)) == step                     # the step it was in was finished, no more
    assert "Traceback" not in err
    assert (log / "stdout.txt").read_text().splitlines()[-1].endswith(m[0])    # the log says why it stopped

    cfg["training"]["n_iters"] = step + 2
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / "short.yml", cfg), "--doc", name,
                              "--run", str(run), "--resume_training")
    assert rc == 0, err
    assert load_checkpoint(log / "checkpoint.pth")["step"] == step + 2
    assert {(step + 1, "loss"), (step + 2, "loss")} <= set(logged_losses(log))


def long_config():
    return tiny_digits_config(training={"n_iters": 100000, "snapshot_freq": 100000, "test_freq": 100000},
                              model={"ngf": 4})


def test_sigterm_to_a_training_subprocess_saves_and_resumes(tmp_path, capfd):
    config, run = write_yaml(tmp_path / "long.yml", long_config()), tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(tmp_path / "stderr", "w") as err:              # a file, not a pipe: a full pipe stalls the child
        proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", config, "--doc", "SIGTERM",
                                 "--run", str(run)], stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        wait_for_step(run / "logs" / "SIGTERM", 2, alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    check_stopped_and_resume(capfd, tmp_path, long_config(), run, "SIGTERM", proc.returncode,
                             (tmp_path / "stderr").read_text())


def test_sigint_during_training_saves_and_resumes(tmp_path, capfd):
    """Ctrl-C (a real SIGINT to this process, sent once training is under way) while main.main trains."""
    import threading
    config, run = write_yaml(tmp_path / "long.yml", long_config()), tmp_path / "run"
    done = threading.Event()

    def press_ctrl_c():
        wait_for_step(run / "logs" / "SIGINT", 2, alive=lambda: not done.is_set())
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=press_ctrl_c, daemon=True)
    watcher.start()
    try:
        rc, err = main_in_process(capfd, "--config", config, "--doc", "SIGINT", "--run", str(run))
    finally:
        done.set()
    watcher.join(timeout=10)
    check_stopped_and_resume(capfd, tmp_path, long_config(), run, "SIGINT", rc, "\n".join(err))


# ---------------------------------------------------------------------------------------------- 4. non-finite loss

def test_non_finite_loss_stops_with_step_and_noise_level_and_keeps_the_checkpoint(tmp_path, capfd):
    run, log = str(tmp_path / "run"), tmp_path / "run" / "logs" / "nan"
    cfg = tiny_digits_config(training={"n_iters": 3, "snapshot_freq": 3})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / "ok.yml", cfg), "--doc", "nan", "--run", run)[0] == 0
    good, good_config = sha(log / "checkpoint.pth"), (log / "config.yml").read_text()
    # resumed with sigma_begin 1e30: sigma^2 overflows float32, the loss at the largest noise level is not finite
    cfg["training"]["n_iters"] = 6
    cfg["model"]["sigma_begin"] = 1e30
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / "bad.yml", cfg), "--doc", "nan", "--run", run,
                              "--resume_training")
    assert rc == 1
    assert re.fullmatch(r"error: non-finite training loss at step 4 at noise level\(s\) 0 \(sigma=1e\+30\).*; "
                        r"stopped before the update; the last good checkpoint \S+checkpoint.pth \(step 3\) is kept "
                        r"unchanged", err[-1]), err[-1]
    assert (log / "stdout.txt").read_text().splitlines()[-1].endswith(err[-1])
    assert sha(log / "checkpoint.pth") == good and (log / "config.yml").read_text() == good_config
    assert load_checkpoint(log / "checkpoint.pth")["step"] == 3
    assert not list(log.glob(".*tmp*"))


def test_non_finite_weights_are_never_saved(tmp_path):
    """A finite loss whose gradient is infinite (sqrt at 0) makes the weights non-finite: nothing is saved."""
    from datasets import BatchStream
    cfg = config_from_dict(tiny_digits_config(training={"n_iters": 4, "snapshot_freq": 1}, optim={"lr": 0.1}))
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    data = torch.utils.data.TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    calls = []

    def loss_fn(m, x):      # step 1 and 2: |w| (fine); step 3: w == 0 exactly -> sqrt has an infinite gradient
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                m.weight.zero_()
            return m.weight.abs().sqrt().reshape(1), None
        return m.weight.abs().reshape(1), None

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"non-finite parameters \(weight\) after step 3; not saved; the last good "
                                        r"checkpoint .*checkpoint.pth \(step 2\) is kept unchanged"):
        train_loop(TrainSetup(model=model, optimizer=opt, train_stream=BatchStream(data, 4, seed=0), test_stream=None,
                              config=cfg, log_dir=tmp_path, writer=None, device=torch.device("cpu")),
                   Objective(loss_fn=loss_fn))
    assert load_checkpoint(tmp_path / "checkpoint.pth")["step"] == 2
    assert torch.isfinite(load_checkpoint(tmp_path / "checkpoint.pth")["model"]["weight"]).all()
    assert not (tmp_path / "checkpoint_3.pth").exists()


# -------------------------------------------------------------------------------------------- 5. safe loading

class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch.save", "pickle protocol 2", "pickle protocol 4"])
def test_a_malicious_pickle_is_refused_without_running_it(tmp_path, fmt):
    marker, path = tmp_path / "pwned", tmp_path / "checkpoint.pth"
    payload = {"model": {"w": [0.0]}, "x": Exploit(marker)}
    pickle.loads(pickle.dumps(Exploit(tmp_path / "works")))          # the payload is live: plain pickle runs it
    assert (tmp_path / "works").exists()
    if fmt == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    if fmt != "pickle protocol 4":
        message = (rf"^refusing to load checkpoint {re.escape(str(path))}: it holds Python objects \(getattr\), not "
                   rf"only tensors and plain data, and loading them could run code$")
    else:       # the safe unpickler stops even earlier, at the pickle protocol 4 framing
        message = (rf"^cannot read checkpoint {re.escape(str(path))} \(truncated, corrupt or not a PyTorch file\): "
                   rf"UnpicklingError: .+$")
    with pytest.raises(UserError, match=message):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny trained AnnealRunner run (ngf 8, 2 steps): (run folder, config dict)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_digits_config(training={"n_iters": 2, "snapshot_freq": 2})
    assert cli.main(["--config", write_yaml(tmp / "c.yml", cfg), "--doc", "t", "--run", str(tmp / "run")]) == 0
    return tmp / "run", cfg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong architecture", "wrong config",
                                    "not a checkpoint"])
def test_a_bad_checkpoint_is_one_clear_error_naming_the_file(tmp_path, capfd, trained_run, damage):
    src_run, cfg = trained_run
    run = tmp_path / "run"
    log = run / "logs" / "t"
    log.mkdir(parents=True)
    (log / "config.yml").write_text((src_run / "logs" / "t" / "config.yml").read_text())
    ckpt = log / "checkpoint.pth"
    data = (src_run / "logs" / "t" / "checkpoint.pth").read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "not a checkpoint":
        torch.save({"model": torch.zeros(3)}, ckpt)
    else:
        ckpt.write_bytes(data)
        key, value = ("ngf", 4) if damage == "wrong architecture" else ("num_classes", 6)
        write_yaml(log / "config.yml", tiny_digits_config(model={key: value}))
    before = sha(ckpt)
    rc, err = main_in_process(capfd, "--doc", "t", "--run", str(run), "--test", "-o", str(tmp_path / "img"))
    assert rc == 1 and len(err) >= 1 and err[-1].startswith("error: ") and str(ckpt) in err[-1], err
    bad_file = "cannot read checkpoint {} (truncated, corrupt or not a PyTorch file): ".format(ckpt)
    expected = {"truncated": bad_file, "garbage": bad_file, "empty": bad_file,
                "not a checkpoint": "is not an NCSN checkpoint",
                "wrong architecture": "does not fit the network of this config",
                "wrong config": "does not fit the network of this config"}[damage]
    assert expected in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert sha(ckpt) == before                                       # nothing was changed
    # and --resume_training says the same, leaving the run untouched
    rc, err = main_in_process(capfd, "--doc", "t", "--run", str(run), "--resume_training")
    assert rc == 1 and expected in err[-1] and sha(ckpt) == before


def test_the_official_checkpoint_samples_and_resumes(tmp_path, capfd, shared):
    """The official list format ([state_dict with 'module.', Adam state]) loads for --test and --resume_training."""
    run, log = tmp_path / "run", tmp_path / "run" / "logs" / "official"
    log.mkdir(parents=True)
    official = shared / "reference" / "golden_ngf16_c1_28" / "checkpoint.pth"
    (log / "checkpoint.pth").write_bytes(official.read_bytes())
    cfg = {"training": {"batch_size": 4, "n_iters": 2, "snapshot_freq": 100, "test_freq": 2, "num_workers": 0},
           "data": {"dataset": "MNIST", "image_size": 28, "channels": 1, "root": str(shared / "data"),
                    "download": False},
           "model": {"ngf": 16, "num_classes": 10},
           "sampling": {"n_samples": 4, "n_steps_each": 1, "gif_every": 5}}
    write_yaml(log / "config.yml", cfg)

    rc, err = main_in_process(capfd, "--doc", "official", "--run", str(run), "--test", "-o", str(tmp_path / "img"))
    assert rc == 0, err
    samples = torch.load(tmp_path / "img" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1 and samples.std() > 0

    rc, err = main_in_process(capfd, "--doc", "official", "--run", str(run), "--resume_training")
    assert rc == 0, err
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 2 and isinstance(state["model"], dict)
    # Adam continued from the official state (its step counter was 1) rather than starting afresh
    assert int(state["optimizer"]["state"][0]["step"]) == 3
    old = load_checkpoint(official)["model"]
    model_keys = set(state["model"])
    assert model_keys == set(old) and any(not torch.equal(state["model"][k], old[k]) for k in old)
    assert ((2, "loss") in logged_losses(log)) and ((2, "test_dsm_loss") in logged_losses(log))


def test_load_model_state_names_the_file(tmp_path):
    from runners import AnnealRunner
    cfg = config_from_dict(tiny_digits_config())
    state = {"model": AnnealRunner.build_model(config_from_dict(tiny_digits_config(model={"ngf": 4}))).state_dict()}
    with pytest.raises(UserError, match=r"^checkpoint /x/checkpoint.pth does not fit the network of this config: "
                                        r"\d+ tensors differ in shape \(e.g. begin_conv.weight: \[4, 1, 3, 3\] in "
                                        r"the file, \[8, 1, 3, 3\] in the network\); was it trained with other"):
        load_model_state(AnnealRunner.build_model(cfg), state, "/x/checkpoint.pth")
    del state["model"]["end_conv.bias"]
    state["model"]["extra"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"; 1 tensors are missing \(e.g. end_conv.bias\); 1 tensors are unexpected "
                                        r"\(e.g. extra\)"):
        load_model_state(AnnealRunner.build_model(cfg), state, "/x/checkpoint.pth")
