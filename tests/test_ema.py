"""The exponential moving average of the weights (``model.ema``, training/ema.py): the update rule by hand, through
the training loop, in checkpoints (saved, validated, restored bit for bit), on resume of runs without it, and in
sampling (``--test`` draws from the EMA network) and previews; off by default, where training is unchanged."""
import copy
import json
import re
import shutil

import pytest
import torch
from conftest import logged_losses, main_in_process, tiny_digits_config, write_yaml

from configs import config_from_dict
from errors import ConfigError, UserError
from training.checkpoint import load_checkpoint, save_checkpoint
from training.ema import EMA
from training.resume import restore_training_state
from training.setup import make_optimizer


def tiny(n_iters=4, snapshot_freq=100, **model):
    return tiny_digits_config(model={"ngf": 4, **model},
                              training={"n_iters": n_iters, "snapshot_freq": snapshot_freq, "test_freq": 100})


def train(capfd, tmp_path, cfg, doc, *extra):
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / f"{doc}.yml", cfg), "--doc", doc,
                              "--run", tmp_path / "run", *extra)
    assert rc == 0, err
    return tmp_path / "run" / "logs" / doc, err


def averaged(previous, current, rate):
    """The update rule, written out: rate * previous + (1 - rate) * current (float32, as the EMA computes it)."""
    return {k: previous[k].clone().mul_(rate).add_(current[k], alpha=1 - rate) if current[k].is_floating_point()
            else current[k] for k in current}


class WithBuffer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.register_buffer("count", torch.zeros(()))


# ------------------------------------------------------------------------------------------------- the update rule

def test_the_update_against_hand_computed_values():
    net = WithBuffer()
    with torch.no_grad():
        net.lin.weight.fill_(0.0)
        net.lin.bias.fill_(2.0)
    ema = EMA(net, 0.75)
    expected_w = 0.0
    for w, count in ((4.0, 1.0), (8.0, 2.0), (-16.0, 3.0)):
        with torch.no_grad():
            net.lin.weight.fill_(w)
            net.count.fill_(count)
        ema.update(net)
        expected_w = 0.75 * expected_w + 0.25 * w           # 1, 2.75, -1.9375: exact in binary
        assert ema.shadow["lin.weight"].item() == expected_w
        assert ema.shadow["lin.bias"].item() == 2.0         # unchanged parameter: stays
        assert ema.shadow["count"].item() == count          # buffers are copied
    assert expected_w == -1.9375
    assert net.lin.weight.item() == -16.0                   # the network itself is untouched
    copy_ = ema.network(net)
    assert copy_.lin.weight.item() == -1.9375 and not copy_.training and net.lin.weight.item() == -16.0
    ema0 = EMA(net, 0.0)                                    # rate 0: the current weights
    with torch.no_grad():
        net.lin.weight.fill_(5.0)
    ema0.update(net)
    assert ema0.shadow["lin.weight"].item() == 5.0


def test_the_ema_tracks_the_bare_network_inside_a_wrapper():
    net = WithBuffer()
    wrapped = torch.nn.DataParallel(net)
    ema = EMA(wrapped, 0.5)
    assert set(ema.state_dict()) == {"lin.weight", "lin.bias", "count"}       # no "module." prefix
    with torch.no_grad():
        net.lin.bias.add_(2.0)
    before = ema.shadow["lin.bias"].item()
    ema.update(wrapped)
    assert ema.shadow["lin.bias"].item() == pytest.approx(before + 1.0)


@pytest.mark.parametrize("rate,ok", [(0.0, True), (0.999, True), (0.9999999, True), (1.0, False), (-0.1, False),
                                     (1.5, False)])
def test_config_keys_and_bounds(rate, ok):
    cfg = tiny_digits_config(model={"ema": True, "ema_rate": rate})
    if ok:
        assert config_from_dict(cfg).model.ema_rate == rate
    else:
        with pytest.raises(ConfigError, match=r"^model\.ema_rate must be in \[0, 1\), got "):
            config_from_dict(cfg)
    default = config_from_dict(tiny_digits_config()).model
    assert default.ema is False and default.ema_rate == 0.999
    with pytest.raises(ConfigError, match=r"^model\.ema must be of type bool"):
        config_from_dict(tiny_digits_config(model={"ema": "yes"}))
    with pytest.raises(ConfigError, match=r"^unknown config key model\.ema_rat \(allowed in model: .*\bema_rate\b"):
        config_from_dict(tiny_digits_config(model={"ema_rat": 0.9}))


# -------------------------------------------------------------------------------------------- through the loop

def test_the_loop_updates_the_ema_after_every_step_and_saves_it(tmp_path, capfd):
    log, err = train(capfd, tmp_path, tiny(n_iters=3, snapshot_freq=1, ema=True, ema_rate=0.9), "ema")
    assert any("moving average of the weights (model.ema_rate 0.9)" in line for line in err)
    states = [load_checkpoint(log / f"checkpoint_{k}.pth") for k in (1, 2, 3)]
    for prev, cur in zip(states, states[1:]):
        assert set(cur["ema"]) == set(cur["model"])                    # the official keys, no prefix
        expected = averaged(prev["ema"], cur["model"], 0.9)
        assert all(torch.equal(cur["ema"][k], expected[k]) for k in expected)
    w = "0.conv.weight" if "0.conv.weight" in states[2]["model"] else next(iter(states[2]["model"]))
    assert not torch.equal(states[2]["ema"][w], states[2]["model"][w])      # a real average, not a copy


def test_off_by_default_trains_as_before_and_writes_no_ema(tmp_path, capfd):
    """EMA on or off, the training itself is the same bit for bit; off, checkpoints hold no 'ema'."""
    off, _ = train(capfd, tmp_path, tiny(), "off")
    on, _ = train(capfd, tmp_path, tiny(ema=True), "on")
    a, b = load_checkpoint(off / "checkpoint.pth"), load_checkpoint(on / "checkpoint.pth")
    assert "ema" not in a and "ema" in b
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert logged_losses(off) == logged_losses(on) and len(logged_losses(off)) == 4


def test_resume_restores_the_ema_bitwise(tmp_path, capfd):
    """6 steps straight == 3 steps, then --resume_training to 6: the same EMA weights, bit for bit."""
    straight, _ = train(capfd, tmp_path, tiny(n_iters=6, ema=True, ema_rate=0.8), "straight")
    resumed, _ = train(capfd, tmp_path, tiny(n_iters=3, ema=True, ema_rate=0.8), "resumed")
    train(capfd, tmp_path, tiny(n_iters=6, ema=True, ema_rate=0.8), "resumed", "--resume_training")
    a, b = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(resumed / "checkpoint.pth")
    assert a["step"] == b["step"] == 6
    assert set(a["ema"]) == set(b["ema"]) and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _ema_warnings(err):
    return [line for line in err if line.startswith("WARNING") and ("EMA" in line or "model.ema" in line)]


def test_a_run_without_ema_resumed_with_it_starts_from_the_restored_weights(tmp_path, capfd):
    log, _ = train(capfd, tmp_path, tiny(n_iters=2, snapshot_freq=1), "late")
    _, err = train(capfd, tmp_path, tiny(n_iters=3, snapshot_freq=1, ema=True, ema_rate=0.5), "late",
                   "--resume_training")
    warnings = _ema_warnings(err)
    assert len(warnings) == 1 and "holds no EMA weights (model.ema was off)" in warnings[0], err
    assert "starts from the restored weights" in warnings[0]
    two, three = load_checkpoint(log / "checkpoint_2.pth"), load_checkpoint(log / "checkpoint_3.pth")
    assert "ema" not in two
    expected = averaged(two["model"], three["model"], 0.5)
    assert all(torch.equal(three["ema"][k], expected[k]) for k in expected)


def test_official_list_checkpoints_resume_into_ema_and_sample(tmp_path, capfd):
    """The official format (a list, 'module.' keys, no EMA): --test uses its weights, --resume_training starts an EMA."""
    log, _ = train(capfd, tmp_path, tiny(n_iters=2), "official")
    state = load_checkpoint(log / "checkpoint.pth")
    torch.save([{f"module.{k}": v for k, v in state["model"].items()}, state["optimizer"]], log / "checkpoint.pth")
    for p in log.glob("checkpoint_*.pth"):
        p.unlink()
    rc, err = main_in_process(capfd, "--test", "--doc", "official", "--run", tmp_path / "run", "-o", tmp_path / "s")
    assert rc == 0 and any("raw weights (no EMA in the checkpoint)" in line for line in err), err
    _, err = train(capfd, tmp_path, tiny(n_iters=2, ema=True), "official", "--resume_training")
    warnings = _ema_warnings(err)
    assert len(warnings) == 1 and "trained without model.ema" in warnings[0], err
    resumed = load_checkpoint(log / "checkpoint.pth")
    assert resumed["step"] == 2 and set(resumed["ema"]) == set(state["model"])


def test_a_run_with_ema_resumed_without_it_says_so(tmp_path, capfd):
    train(capfd, tmp_path, tiny(n_iters=2, ema=True), "drop")
    _, err = train(capfd, tmp_path, tiny(n_iters=3, ema=False), "drop", "--resume_training")   # laid over the run's
    warnings = _ema_warnings(err)
    assert len(warnings) == 1 and "model.ema is off: the EMA weights of" in warnings[0], err
    assert "ema" not in load_checkpoint(tmp_path / "run" / "logs" / "drop" / "checkpoint.pth")


# ------------------------------------------------------------------------------------ checkpoint field validation

def linear_state(tmp_path):
    """A Linear(2, 2) after two Adam steps with an EMA, saved: (path, loaded state, config)."""
    config = config_from_dict(tiny_digits_config(model={"ema": True, "ema_rate": 0.5}))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model.parameters(), config.optim)
    ema = EMA(model, 0.5)
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(3, 2)).pow(2).mean().backward()
        opt.step()
        ema.update(model)
    path = tmp_path / "checkpoint.pth"
    save_checkpoint([path], model=model, optimizer=opt, step=2, sigmas=None, config=config, ema=ema)
    return path, load_checkpoint(path), config


def target(config):
    torch.manual_seed(1)
    model = torch.nn.Linear(2, 2)
    return dict(model=model, optimizer=make_optimizer(model.parameters(), config.optim), ema=EMA(model, 0.5),
                config=config)


DELETE = object()
BAD_EMA = [
    (None, "abc", r"ema"),
    (None, [1, 2], r"ema"),
    ("weight", DELETE, r"ema\.weight"),
    ("weight", torch.zeros(3), r"ema\.weight"),
    ("weight", torch.zeros(2, 2, dtype=torch.float64), r"ema\.weight"),
    ("bias", torch.tensor([float("nan"), 0.0]), r"ema\.bias"),
    ("bias", "x", r"ema\.bias"),
    ("extra", torch.zeros(1), r"ema\.extra"),
    (3, torch.zeros(1), r"ema\.3"),
]


@pytest.mark.parametrize("key,value,name", BAD_EMA, ids=[f"{k}={str(v)[:10]}" for k, v, _ in BAD_EMA])
def test_a_bad_ema_field_is_one_error_naming_file_and_field_and_changes_nothing(tmp_path, key, value, name):
    path, state, config = linear_state(tmp_path)
    bad = copy.deepcopy(state)
    if key is None:
        bad["ema"] = value
    elif value is DELETE:
        del bad["ema"][key]
    else:
        bad["ema"][key] = value
    t = target(config)
    weights, shadow = copy.deepcopy(t["model"].state_dict()), copy.deepcopy(t["ema"].state_dict())
    with pytest.raises(UserError) as e:
        restore_training_state(bad, path=path, **t)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and len(message) < 400, message
    assert re.search(rf"field '{name}'", message), message
    assert all(torch.equal(t["model"].state_dict()[k], weights[k]) for k in weights)
    assert all(torch.equal(t["ema"].shadow[k], shadow[k]) for k in shadow)


def test_a_valid_ema_field_restores_exactly(tmp_path):
    path, state, config = linear_state(tmp_path)
    t = target(config)
    assert restore_training_state(state, path=path, **t) == 2
    assert all(torch.equal(t["ema"].shadow[k], state["ema"][k]) for k in state["ema"])
    assert not torch.equal(state["ema"]["weight"], state["model"]["weight"])


# ------------------------------------------------------------------------------------------ sampling and previews

def test_test_samples_with_the_ema_weights(tmp_path, capfd):
    """A checkpoint whose EMA differs from its raw weights: --test gives the samples of the EMA network."""
    log, _ = train(capfd, tmp_path, tiny(n_iters=3, ema=True, ema_rate=0.5), "ema")
    state = load_checkpoint(log / "checkpoint.pth")
    for doc, weights in (("as_ema", state["ema"]), ("as_raw", state["model"])):      # the same run, no EMA field
        other = log.parent / doc
        other.mkdir()
        shutil.copy(log / "config.yml", other / "config.yml")
        plain = {k: v for k, v in state.items() if k != "ema"}
        torch.save({**plain, "model": weights}, other / "checkpoint.pth")

    def samples(doc):
        rc, err = main_in_process(capfd, "--test", "--doc", doc, "--run", tmp_path / "run", "-o", tmp_path / doc)
        assert rc == 0, err
        return torch.load(tmp_path / doc / "samples.pth", weights_only=True), err

    with_ema, err = samples("ema")
    assert any("the EMA weights" in line for line in err), err
    assert torch.equal(with_ema, samples("as_ema")[0])
    assert not torch.equal(with_ema, samples("as_raw")[0])


def test_the_preview_draws_from_the_ema_weights(tmp_path, capfd, monkeypatch):
    from runners.anneal_runner import AnnealRunner
    seen = {}

    def preview(self, model, step, writer):
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(AnnealRunner, "preview", preview)
    cfg = tiny(n_iters=2, snapshot_freq=2, ema=True, ema_rate=0.5)
    cfg["training"]["preview_freq"] = 2
    log, _ = train(capfd, tmp_path, cfg, "preview")
    state = load_checkpoint(log / "checkpoint.pth")
    assert set(seen) == {2}
    assert all(torch.equal(seen[2][k], state["ema"][k]) for k in state["ema"])
    assert not all(torch.equal(seen[2][k], state["model"][k]) for k in state["model"])


def test_compare_scores_the_ema_weights(tmp_path, capfd):
    train(capfd, tmp_path, tiny(n_iters=2, snapshot_freq=1, ema=True, ema_rate=0.5), "cmp")
    rc, err = main_in_process(capfd, "--compare", "--doc", "cmp", "--run", tmp_path / "run", "-o", tmp_path / "c")
    assert rc == 0, err
    rows = json.loads((tmp_path / "c" / "comparison.json").read_text())["rows"]
    assert [(r["step"], r["ema"]) for r in rows] == [(1, True), (2, True)]
