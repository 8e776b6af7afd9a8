"""Resume safety: changed settings are applied or refused, checkpoint fields are validated, a run killed (SIGKILL) at
any moment stays resumable from its newest complete snapshot, stale temporary files are cleaned, derived seeds of
any size work.

Function-level tests use a tiny Linear model; the end-to-end runs use ``main.main`` in-process (and one real
``python main.py`` subprocess that is SIGKILLed) on scikit-learn's digits with ngf 4.
"""
import argparse
import copy
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, logged_losses, main_in_process, tiny_digits_config, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs import config_from_dict
from datasets import BatchStream, FreshSamples
from errors import UserError
from training.checkpoint import load_checkpoint, save_checkpoint
from training.resume import (
    find_resume_checkpoint,
    remove_stale_temp_files,
    restore_training_state,
    resume_checkpoint_path,
)
from training.rng import rng_state, seed_everything
from training.setup import make_optimizer, setup_training


def tiny(**overrides):
    cfg = tiny_digits_config(model={"ngf": 4}, **overrides)
    cfg["training"].update(overrides.get("training", {}))
    return cfg


# --------------------------------------------------------------------------------- a tiny training state to restore

DATA = torch.utils.data.TensorDataset(torch.arange(20.0).reshape(10, 2), torch.zeros(10))


def make_state(tmp_path, optim_cfg=None, steps=3, batch_size=4):
    """Train a Linear(2, 2) ``steps`` Adam steps, save it: (checkpoint path, loaded state, config dict)."""
    cfg = tiny_digits_config(optim=optim_cfg or {}, training={"batch_size": batch_size})
    config = config_from_dict(cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model.parameters(), config.optim)
    stream = BatchStream(DATA, batch_size, seed=3)
    for _ in range(steps):
        x, _ = next(stream)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    path = tmp_path / "checkpoint.pth"
    save_checkpoint([path], model=model, optimizer=opt, step=steps, sigmas=None, config=config,
                    streams={"train": stream, "fresh": FreshSamples(_Dist(), 2, seed=5)})
    return path, load_checkpoint(path), cfg


class _Dist:
    def sample(self, n, generator=None):
        return torch.randn(n, 2, generator=generator)


def fresh_target(cfg, batch_size=4):
    """A new model, its optimizer (built from ``cfg``) and streams: what setup_training restores into."""
    config = config_from_dict(cfg)
    torch.manual_seed(1)
    model = torch.nn.Linear(2, 2)
    return dict(model=model, optimizer=make_optimizer(model.parameters(), config.optim),
                streams={"train": BatchStream(DATA, batch_size, seed=3), "fresh": FreshSamples(_Dist(), 2, seed=9)},
                config=config)


def snapshot(target):
    return (copy.deepcopy(target["model"].state_dict()), copy.deepcopy(target["optimizer"].state_dict()),
            {k: copy.deepcopy(s.state_dict()) for k, s in target["streams"].items()})


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------------ 1. changed settings

def test_changed_lr_weight_decay_beta1_are_applied_to_the_restored_optimizer(tmp_path, caplog):
    path, state, cfg = make_state(tmp_path)
    cfg["optim"].update(lr=0.0003, weight_decay=0.01, beta1=0.5)
    target = fresh_target(cfg)
    with caplog.at_level(logging.INFO):
        assert restore_training_state(state, path=path, **target) == 3
    group = target["optimizer"].param_groups[0]
    assert group["lr"] == 0.0003 and group["weight_decay"] == 0.01 and group["betas"] == (0.5, 0.999)
    assert int(target["optimizer"].state[target["model"].weight]["step"]) == 3      # the moments were restored
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optim.")]
    assert len(lines) == 3 and any("optim.lr changed" in m and "0.001 -> 0.0003" in m for m in lines), lines
    # and the next step uses them: same as an optimizer that had those values all along
    reference = fresh_target(cfg)
    restore_training_state(load_checkpoint(path), path=path, **{**reference, "config": None})
    for g in reference["optimizer"].param_groups:
        g.update(lr=0.0003, weight_decay=0.01, betas=(0.5, 0.999))
    for t in (target, reference):
        t["optimizer"].zero_grad()
        t["model"](torch.ones(1, 2)).sum().backward()
        t["optimizer"].step()
    assert torch.equal(target["model"].weight, reference["model"].weight)


def test_turning_amsgrad_off_is_applied_and_on_is_refused(tmp_path):
    path, state, cfg = make_state(tmp_path, {"amsgrad": True})
    cfg["optim"]["amsgrad"] = False
    target = fresh_target(cfg)
    restore_training_state(state, path=path, **target)
    assert target["optimizer"].param_groups[0]["amsgrad"] is False
    assert "max_exp_avg_sq" not in target["optimizer"].state[target["model"].weight]
    target["optimizer"].step()                                    # plain Adam continues without a KeyError

    path, state, cfg = make_state(tmp_path, {"amsgrad": False})
    cfg["optim"]["amsgrad"] = True
    target = fresh_target(cfg)
    before = snapshot(target)
    with pytest.raises(UserError, match=r"^cannot turn optim.amsgrad on when resuming .*checkpoint.pth: "):
        restore_training_state(state, path=path, **target)
    assert same(snapshot(target), before)


def test_another_optimizer_type_is_refused_on_resume(tmp_path, capfd):
    run = tmp_path / "run"
    cfg = tiny(training={"n_iters": 2, "snapshot_freq": 2})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / "a.yml", cfg), "--doc", "d", "--run", str(run))[0] == 0
    before = (run / "logs" / "d" / "checkpoint.pth").read_bytes()
    cfg["optim"]["optimizer"] = "SGD"
    cfg["training"]["n_iters"] = 4
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / "b.yml", cfg), "--doc", "d", "--run", str(run),
                              "--resume_training")
    assert rc == 1 and "Traceback" not in "\n".join(err), err
    assert re.fullmatch(r"error: cannot resume \S+checkpoint.pth with optim.optimizer SGD: the run was trained with "
                        r"Adam, .*", err[-1]), err
    assert (run / "logs" / "d" / "checkpoint.pth").read_bytes() == before


def test_a_resume_with_a_new_lr_trains_with_it_end_to_end(tmp_path, capfd):
    """Through main.main: the new lr is in the optimizer (and so in the next checkpoint), and the log says so."""
    run, log = tmp_path / "run", tmp_path / "run" / "logs" / "lr"
    cfg = tiny(training={"n_iters": 2, "snapshot_freq": 2, "batch_size": 8})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / "a.yml", cfg), "--doc", "lr", "--run", str(run))[0] == 0
    cfg["optim"]["lr"] = 0.0002
    cfg["training"].update(n_iters=3, batch_size=4)         # a changed batch size: allowed, a warning lists it
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / "b.yml", cfg), "--doc", "lr", "--run", str(run),
                              "--resume_training")
    assert rc == 0, err
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 3 and state["optimizer"]["param_groups"][0]["lr"] == 0.0002
    text = (log / "stdout.txt").read_text()
    assert "optim.lr changed since" in text and "0.001 -> 0.0002, applied to the restored Adam optimizer" in text
    assert re.search(r"settings changed since \S+ take effect from this resume: training.batch_size 8 -> 4", text)
    # the train stream continued after the 16 examples already seen (2 batches of 8): batch 4 of 4, then one more
    assert state["streams"]["train"] == {"epoch": 0, "batch": 5, "seed": 1234}
    assert (3, "loss") in logged_losses(log)


# ------------------------------------------------------------------------------------- 2. checkpoint fields checked

def corrupt(state, field, value):
    state = copy.deepcopy(state)
    *parents, last = field
    d = state
    for k in parents:
        if isinstance(d[k], tuple):         # the Python random state is a tuple: replace it by an editable list
            d[k] = list(d[k])
        d = d[k]
    if value is DELETE:
        del d[last]
    else:
        d[last] = value
    return state


DELETE = object()
CORRUPTIONS = [
    (("step",), -5, "step"),
    (("step",), "7", "step"),
    (("step",), 2.5, "step"),
    (("optimizer",), [1, 2], "optimizer"),
    (("optimizer", "param_groups"), DELETE, "optimizer.param_groups"),
    (("optimizer", "param_groups"), [], "optimizer.param_groups"),
    (("optimizer", "param_groups", 0, "params"), [0], r"optimizer.param_groups\[0\].params"),
    (("optimizer", "param_groups", 0, "lr"), "fast", r"optimizer.param_groups\[0\].lr"),
    (("optimizer", "param_groups", 0, "betas"), (0.9,), r"optimizer.param_groups\[0\].betas"),
    (("optimizer", "param_groups", 0, "eps"), 2 ** 64, r"optimizer.param_groups\[0\].eps"),   # no int64: found by the fuzz test
    (("optimizer", "state", 0, "exp_avg"), torch.zeros(3), r"optimizer.state\[0\].exp_avg"),
    (("optimizer", "state", 0, "exp_avg_sq"), DELETE, r"optimizer.state\[0\].exp_avg_sq"),
    (("optimizer", "state", 0, "exp_avg_sq"), -torch.ones(2, 2), r"optimizer.state\[0\].exp_avg_sq"),
    (("optimizer", "state", 0, "step"), torch.tensor([1.0, 2.0]), r"optimizer.state\[0\].step"),
    (("optimizer", "state", 7), {}, r"optimizer.state\[7\]"),
    (("rng",), "x", "rng"),
    (("rng", "torch"), torch.zeros(10, dtype=torch.uint8), "rng.torch"),
    (("rng", "torch"), torch.zeros(5056, dtype=torch.uint8), "rng.torch"),
    (("rng", "numpy", "pos"), 625, "rng.numpy.pos"),
    (("rng", "numpy", "keys"), torch.zeros(624), "rng.numpy.keys"),
    (("rng", "python"), (3, (1, 2), None), "rng.python"),
    (("streams",), [1], "streams"),
    (("streams", "train", "epoch"), -1, "streams.train.epoch"),
    (("streams", "train", "batch"), 99, "streams.train.batch"),
    (("streams", "train", "batch"), DELETE, "streams.train.batch"),
    (("streams", "train", "seed"), 2 ** 70, "streams.train.seed"),
    (("streams", "fresh", "generator"), torch.zeros(3), "streams.fresh.generator"),
    (("streams", "fresh", "generator"), torch.zeros(5056, dtype=torch.uint8), "streams.fresh.generator"),
    (("config",), "abc", "config"),
]


@pytest.mark.parametrize("field,value,name", CORRUPTIONS, ids=[f"{'.'.join(map(str, f))}={str(v)[:12]}"
                                                               for f, v, _ in CORRUPTIONS])
def test_a_bad_field_is_one_error_naming_file_and_field_and_changes_nothing(tmp_path, field, value, name):
    path, state, cfg = make_state(tmp_path)
    target = fresh_target(cfg)
    before, rng_before = snapshot(target), rng_state()
    with pytest.raises(UserError) as e:
        restore_training_state(corrupt(state, field, value), path=path, **target)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and len(message) < 400, message
    assert re.search(rf"'{name}'", message), message
    assert same(snapshot(target), before) and same(rng_state(), rng_before)   # nothing half-restored


def test_a_valid_state_restores_exactly(tmp_path):
    path, state, cfg = make_state(tmp_path)
    target = fresh_target(cfg)
    assert restore_training_state(state, path=path, **target) == 3
    assert same(target["model"].state_dict(), state["model"])
    assert target["streams"]["train"].state_dict() == {"epoch": 0, "batch": 3}      # 3 batches of 4 (of 10)
    assert torch.equal(target["streams"]["fresh"].generator.get_state(), state["streams"]["fresh"]["generator"])


def test_a_negative_step_in_checkpoint_pth_is_refused_by_a_resumed_run(tmp_path, capfd):
    run, log = tmp_path / "run", tmp_path / "run" / "logs" / "neg"
    cfg = tiny(training={"n_iters": 2, "snapshot_freq": 2})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / "a.yml", cfg), "--doc", "neg", "--run", str(run))[0] == 0
    state = torch.load(log / "checkpoint.pth", weights_only=True)
    state["step"] = -5
    torch.save(state, log / "checkpoint.pth")
    rc, err = main_in_process(capfd, "--doc", "neg", "--run", str(run), "--resume_training")
    assert rc == 1 and "Traceback" not in "\n".join(err), err
    assert err[-1] == (f"error: cannot resume from {log / 'checkpoint.pth'}: field 'step' must be an int >= 0 (or "
                      f"absent), not -5")
    assert not list(log.glob("checkpoint_-*"))


def _leaves(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(d, (list, tuple)) and len(d) < 10:
        for i, v in enumerate(d):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix


BAD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                       st.text(max_size=3), st.lists(st.integers(-3, 3), max_size=3), st.just({}),
                       st.just({"state": {}, "param_groups": []}),
                       st.builds(lambda n, d: torch.zeros(n, dtype=d), st.integers(0, 6000),
                                 st.sampled_from([torch.uint8, torch.int64, torch.float32])),
                       st.builds(lambda s: torch.full(s, -1.0), st.sampled_from([(), (2,), (2, 2)])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruptions_restore_or_give_one_user_error(tmp_path, data):
    """Any field (step, optimizer, rng, streams and everything under them) replaced by a random value: either the
    state restores or one UserError line naming the file comes, never another exception."""
    if not hasattr(test_random_corruptions_restore_or_give_one_user_error, "cache"):
        test_random_corruptions_restore_or_give_one_user_error.cache = make_state(tmp_path)
    path, state, cfg = test_random_corruptions_restore_or_give_one_user_error.cache
    fields = [f for f in _leaves({k: state[k] for k in ("step", "optimizer", "rng", "streams")})]
    fields += [f[:n] for f in fields for n in range(1, len(f))]
    field = data.draw(st.sampled_from(sorted(set(fields), key=str)))
    value = data.draw(st.one_of(BAD_VALUES, st.just(DELETE)))
    target = fresh_target(cfg)
    rng_before = rng_state()
    try:
        restore_training_state(corrupt(state, field, value), path=path, **target)
    except UserError as e:
        assert "\n" not in str(e) and str(path) in str(e) and len(str(e)) < 400, str(e)
        return
    finally:
        from training.rng import set_rng_state
        set_rng_state(rng_before)
    target["optimizer"].zero_grad()                      # a restored state trains on
    target["model"](next(target["streams"]["train"])[0]).pow(2).mean().backward()
    target["optimizer"].step()
    next(target["streams"]["fresh"])


# ------------------------------------------------------------------------- 3. which checkpoint, stale temp files

def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def trained(tmp_path, capfd, doc, n_iters=3):
    run = tmp_path / "run"
    cfg = tiny(training={"n_iters": n_iters, "snapshot_freq": 1, "test_freq": 100})
    assert main_in_process(capfd, "--config", write_yaml(tmp_path / f"{doc}.yml", cfg), "--doc", doc,
                           "--run", str(run))[0] == 0
    return run, run / "logs" / doc, cfg


def test_resume_checkpoint_path_picks_the_newest_complete_snapshot(tmp_path, capfd):
    run, log, cfg = trained(tmp_path, capfd, "pick")
    assert resume_checkpoint_path(log) == log / "checkpoint.pth"
    (log / "checkpoint.pth").unlink()                                         # killed during the first write
    assert resume_checkpoint_path(log) == log / "checkpoint_3.pth"
    (log / "checkpoint_3.pth").write_bytes((log / "checkpoint_3.pth").read_bytes()[:1000])    # truncated
    assert resume_checkpoint_path(log) == log / "checkpoint_2.pth"
    (log / "checkpoint.pth").write_bytes((log / "checkpoint_1.pth").read_bytes())
    assert resume_checkpoint_path(log) == log / "checkpoint_2.pth"             # newer than checkpoint.pth (step 1)
    (log / "checkpoint.pth").write_bytes(b"garbage")
    assert resume_checkpoint_path(log) == log / "checkpoint_2.pth"
    for p in log.glob("checkpoint*.pth"):
        p.write_bytes(b"")
    with pytest.raises(UserError, match=r"^cannot resume: no loadable checkpoint in .*: cannot read checkpoint"):
        resume_checkpoint_path(log)
    for p in log.glob("checkpoint*.pth"):
        p.unlink()
    with pytest.raises(UserError, match=rf"^cannot resume: no checkpoint in {re.escape(str(log))}$"):
        resume_checkpoint_path(log)


def test_remove_stale_temp_files_keeps_those_of_live_processes(tmp_path):
    dead = tmp_path / f".checkpoint.pth.tmp{dead_pid()}"
    dead2 = tmp_path / f".checkpoint_4.pth.tmp{dead_pid()}"
    mine = tmp_path / f".checkpoint.pth.tmp{os.getpid()}"
    other = tmp_path / ".checkpoint.pth.tmpabc"
    unrelated = tmp_path / f".config.yml.tmp{dead_pid()}"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".checkpoint.pth.tmp{live.pid}"
        for p in (dead, dead2, mine, other, unrelated, alive):
            p.write_bytes(b"x")
        assert sorted(remove_stale_temp_files(tmp_path)) == sorted([dead, dead2])
        assert not dead.exists() and not dead2.exists()
        assert mine.exists() and other.exists() and unrelated.exists() and alive.exists()
    finally:
        live.kill()
        live.wait()


def setup_args(run, doc, seed=1234):
    return argparse.Namespace(seed=seed, run=str(run), resume_training=True, log=str(run / "logs" / doc),
                              tb=str(run / "tensorboard" / doc))


def test_setup_training_resumes_from_the_snapshot_and_cleans_stale_temp_files(tmp_path, capfd):
    from runners import AnnealRunner
    run, log, cfg = trained(tmp_path, capfd, "kill", n_iters=2)
    (log / "checkpoint.pth").unlink()
    (log / "checkpoint_2.pth").write_bytes((log / "checkpoint_2.pth").read_bytes()[:500])
    stale = log / f".checkpoint.pth.tmp{dead_pid()}"
    stale.write_bytes(b"half")
    config = config_from_dict(cfg)
    s = setup_training(setup_args(run, "kill"), config, torch.device("cpu"), AnnealRunner.build_model(config))
    s.writer.close()
    assert s.start_step == 1 and not stale.exists()


def test_a_read_only_run_folder_is_one_clear_error(tmp_path, capfd, monkeypatch):
    from runners import AnnealRunner
    run, log, cfg = trained(tmp_path, capfd, "ro", n_iters=1)
    import builtins
    real_open = builtins.open

    def read_only(path, mode="r", *a, **k):     # as root, chmod does not stop writes: refuse them here
        if any(c in mode for c in "wax+") and Path(path).parent in (log, run / "tensorboard" / "ro"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", read_only)
    config = config_from_dict(cfg)
    with pytest.raises(UserError, match=rf"^cannot resume: the run folder {re.escape(str(log))} is not writable "
                                        r"\(Permission denied\); checkpoints could not be saved$"):
        setup_training(setup_args(run, "ro"), config, torch.device("cpu"), AnnealRunner.build_model(config))


def test_a_read_only_run_folder_through_main(tmp_path, capfd, monkeypatch):
    """The same through main.py: one error line, no traceback (writes refused as a read-only folder would)."""
    import builtins
    run, log, cfg = trained(tmp_path, capfd, "ro2", n_iters=1)
    cfg["training"]["n_iters"] = 2
    config = write_yaml(tmp_path / "b.yml", cfg)
    real_open = builtins.open

    def read_only(path, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and Path(path).parent in (log, run / "tensorboard" / "ro2"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", read_only)
    rc, err = main_in_process(capfd, "--config", config, "--doc", "ro2", "--run", str(run), "--resume_training")
    monkeypatch.undo()
    assert rc == 1 and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err


# ------------------------------------------------------------------------------------- SIGKILL during saves

def _resume_in_process(capfd, monkeypatch, config, doc, run):
    """``main.py --resume_training`` in-process (main.py resumes from resume_checkpoint_path's choice)."""
    return main_in_process(capfd, "--config", config, "--doc", doc, "--run", str(run), "--resume_training")


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_sigkill_at_random_moments_during_saves_stays_resumable(tmp_path, capfd, monkeypatch, kill_after):
    """A real ``python main.py`` saving at every step (snapshot_freq 1) is SIGKILLed once ``kill_after`` snapshots
    exist (or are being written), after a small random delay: the newest complete snapshot loads and training
    resumes from it to n_iters."""
    rnd = random.Random(kill_after * 7919 + int(time.time()))
    run, doc = tmp_path / "run", "kill"
    log = run / "logs" / doc
    cfg = tiny(training={"n_iters": 100000, "snapshot_freq": 1, "test_freq": 100000, "log_freq": 1})
    config = write_yaml(tmp_path / "c.yml", cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", config, "--doc", doc,
                                 "--run", str(run)], stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path)
    delay = rnd.choice([0.0, rnd.uniform(0, 0.02), rnd.uniform(0, 0.2)])
    try:
        deadline = time.monotonic() + 180
        while not (log.is_dir() and len(list(log.glob(f".checkpoint_{kill_after}.pth.tmp*"))
                                        + list(log.glob(f"checkpoint_{kill_after}.pth")))):
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    complete = []
    for p in log.glob("checkpoint_*.pth"):
        try:
            complete.append(load_checkpoint(p)["step"])
        except UserError:
            pass                    # the one being written when killed (atomic_write makes this not happen)
    newest = max(complete, default=None)
    if newest is None:              # killed before the first snapshot was complete: nothing to resume, one error
        with pytest.raises(UserError, match="^cannot resume: no"):
            resume_checkpoint_path(log)
        return
    path, state = find_resume_checkpoint(log)
    assert state["step"] == newest, (path, newest)      # the newest complete snapshot, whatever file holds it

    cfg["training"]["n_iters"] = newest + 2
    rc, err = _resume_in_process(capfd, monkeypatch, write_yaml(tmp_path / "more.yml", cfg), doc, run)
    assert rc == 0, err
    assert load_checkpoint(log / "checkpoint.pth")["step"] == newest + 2
    assert not list(log.glob(".checkpoint*.tmp*"))                      # the killed process's temp file is gone
    assert {(newest + 1, "loss"), (newest + 2, "loss")} <= set(logged_losses(log))


# ---------------------------------------------------------------------------------------------------- seeding

def test_seed_everything_takes_any_int_and_keeps_in_range_seeds_unchanged():
    for seed in (0, 1234, 2 ** 32 - 1):
        seed_everything(seed)
        got = (random.random(), np.random.rand(), torch.rand(1))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        assert got == (random.random(), np.random.rand(), torch.rand(1))
    big = 1234 + 1 + 1_000_003 * 10_000
    seed_everything(big)
    got = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(big)
    np.random.seed(big % 2 ** 32)
    torch.manual_seed(big)
    assert got == (random.random(), np.random.rand(), torch.rand(1))
    for seed in (2 ** 70, -5, -2 ** 70):
        seed_everything(seed)                                # no exception anywhere in int's range
