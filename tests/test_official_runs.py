"""Run folders in the official layout (the released run.zip): ``run/logs/<doc>/checkpoint.pth`` in the official list
format and a ``config.yml`` written by ``yaml.dump`` of an ``argparse.Namespace``
(``!!python/object:argparse.Namespace`` tags) sample and resume as they come; any other Python tag in a config.yml is
refused with one line, executing nothing.

The folders are built here the way the official code builds them (``dict2namespace`` + ``yaml.dump``;
``torch.save([DataParallel state_dict, optimizer.state_dict()])``) from our own tiny networks on the 8x8 digits.
"""
import argparse
import copy
import json

import pytest
import torch
import yaml
from conftest import logged_losses, main_in_process

from configs import config_from_dict, config_to_dict, dump_config, load_config
from configs.schema import Config
from errors import ConfigError
from runners import AnnealRunner, BaselineRunner, ScoreNetRunner
from training.checkpoint import load_checkpoint

# The official config files (ermongroup/ncsn configs/*.yml, spec/official.md section 2), including their commented-out
# data blocks.  The official code dumps exactly these keys (``config.device`` is set after the dump).
_ANNEAL = {
    "training": {"batch_size": 128, "n_epochs": 500000, "n_iters": 200001, "ngpu": 1, "snapshot_freq": 5000,
                 "algo": "dsm", "anneal_power": 2.0},
    "data": {"dataset": "MNIST", "image_size": 28, "channels": 1, "logit_transform": False, "random_flip": False},
    "model": {"sigma_begin": 1, "sigma_end": 0.01, "num_classes": 10, "batch_norm": False, "ngf": 64},
    "optim": {"weight_decay": 0.000, "optimizer": "Adam", "lr": 0.001, "beta1": 0.9, "amsgrad": False},
}


def _with(base, **sections):
    cfg = copy.deepcopy(base)
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


OFFICIAL_CONFIGS = {
    "anneal_mnist": _ANNEAL,
    "anneal_celeba": _with(_ANNEAL, data={"dataset": "CELEBA", "image_size": 32, "channels": 3, "random_flip": True},
                           model={"ngf": 128}),
    "anneal_cifar10": _with(_ANNEAL, data={"dataset": "CIFAR10", "image_size": 32, "channels": 3,
                                           "random_flip": True}, model={"ngf": 128}),
    "baseline": _with(_ANNEAL, training={"n_particles": 1}),
    "scorenet_cifar10": {
        "training": {"batch_size": 128, "n_epochs": 500000, "n_iters": 50001, "ngpu": 1, "noise_std": 0.01,
                     "algo": "ssm", "snapshot_freq": 5000},
        "data": {"dataset": "CIFAR10", "image_size": 32, "channels": 3, "logit_transform": False},
        "model": {"n_particles": 1, "lam": 10, "z_dim": 100, "nef": 32, "ndf": 32},
        "optim": {"weight_decay": 0.000, "optimizer": "Adam", "lr": 0.001, "beta1": 0.9},
    },
}
OFFICIAL_CONFIGS["scorenet_mnist"] = _with(OFFICIAL_CONFIGS["scorenet_cifar10"],
                                           data={"dataset": "MNIST", "image_size": 16, "channels": 1})


def dict2namespace(config):
    """The official ``main.dict2namespace``."""
    namespace = argparse.Namespace()
    for key, value in config.items():
        setattr(namespace, key, dict2namespace(value) if isinstance(value, dict) else value)
    return namespace


def official_config_yml(cfg):
    """config.yml as the official main.py writes it: ``yaml.dump(namespace, default_flow_style=False)``."""
    return yaml.dump(dict2namespace(cfg), default_flow_style=False)


def tiny_official(base=_ANNEAL):
    """An official key set (nothing more) with tiny values on the 8x8 digits."""
    return _with(base, training={"batch_size": 8, "n_iters": 3, "snapshot_freq": 100},
                 data={"dataset": "DIGITS", "image_size": 8}, model={"ngf": 4, "num_classes": 3, "sigma_end": 0.1})


def official_run_folder(tmp_path, runner, cfg, doc="mnist"):
    """``<tmp>/run/logs/<doc>/`` as in the released run.zip: the official list checkpoint (``module.`` keys, Adam
    state after one step) and the Namespace-tagged config.yml.  Returns (run folder, log folder, the state dict)."""
    run = tmp_path / "run"
    log = run / "logs" / doc
    log.mkdir(parents=True)
    text = official_config_yml(cfg)
    assert text.startswith("!!python/object:argparse.Namespace\n")
    (log / "config.yml").write_text(text)
    torch.manual_seed(0)
    net = runner.build_model(config_from_dict(cfg))
    if runner is not ScoreNetRunner:            # the official ScoreNetRunner alone has no DataParallel
        net = torch.nn.DataParallel(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["optim"]["lr"], betas=(cfg["optim"]["beta1"], 0.999))
    x = torch.rand(2, 1, 8, 8)
    out = net(x, torch.zeros(2, dtype=torch.long)) if runner is AnnealRunner else net(x)
    out.square().mean().backward()
    optimizer.step()
    states = [net.state_dict(), optimizer.state_dict()]
    assert all(k.startswith("module.") for k in states[0]) == (runner is not ScoreNetRunner)
    torch.save(states, log / "checkpoint.pth")
    return run, log, {k.removeprefix("module."): v.clone() for k, v in states[0].items()}


# ------------------------------------------------------------------------------------------------- the loader


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_dumped_configs_load(tmp_path, name):
    """Every official config, dumped as the official code dumps it, loads with the same values (no key refused)."""
    cfg = OFFICIAL_CONFIGS[name]
    path = tmp_path / "config.yml"
    path.write_text(official_config_yml(cfg))
    loaded = config_to_dict(load_config(path))
    for section, values in cfg.items():
        for key, value in values.items():
            assert loaded[section][key] == value, (section, key)
    assert load_config(path) == config_from_dict(cfg)


def test_our_config_yml_still_loads(tmp_path):
    """config.yml as our code writes it (plain YAML, every default written out) reads back unchanged."""
    cfg = config_from_dict(tiny_official())
    dump_config(cfg, tmp_path / "config.yml")
    text = (tmp_path / "config.yml").read_text()
    assert "!!" not in text and "sampling:" in text and "toy:" in text
    assert load_config(tmp_path / "config.yml") == cfg
    assert load_config(tmp_path / "config.yml") != Config()


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:pathlib.Path.touch",     # would create the marker file
    "!!python/object/new:pathlib.Path.touch",
    "!<tag:yaml.org,2002:python/object/apply:pathlib.Path.touch>",
])
def test_a_python_tag_inside_a_namespace_runs_nothing(tmp_path, tag):
    marker = tmp_path / "marker"
    text = official_config_yml(tiny_official()).replace(
        "  ngf: 4\n", f"  ngf: 4\n  sigma: {tag} [{str(marker)!r}]\n")
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "\n" not in message and len(message) < 250 + len(str(path)), message
    assert message.startswith(f"malformed YAML in {path}: the Python tag !!python/object/")
    assert "pathlib.Path.touch at line " in message and "is refused" in message
    assert not marker.exists()


@pytest.mark.parametrize("text, expected", [
    ("!!python/object:os.system\ntraining: {}\n", "the Python tag !!python/object:os.system at line 1 is refused"),
    ("!!python/object/apply:os.system ['true']\n", "the Python tag !!python/object/apply:os.system at line 1"),
    ("training: !!python/name:os.system ''\n", "the Python tag !!python/name:os.system at line 1 is refused"),
    ("training: !!python/module:os ''\n", "the Python tag !!python/module:os at line 1 is refused"),
    ("data: !!python/object:argparse.Namespace\n  dataset: !!python/tuple [1]\n",
     "the Python tag !!python/tuple at line 2 is refused"),
    ("!!python/object:argparse.NamespaceX\ntraining: {}\n",
     "the Python tag !!python/object:argparse.NamespaceX at line 1 is refused"),
    ("!!python/object:" + "a" * 500 + "\n", "the Python tag !!python/object:aaaaaaaaaa"),
    ("!!python/object:argparse.Namespace 3\n",
     "!!python/object:argparse.Namespace at line 1 must tag a mapping of keys to values, not a scalar"),
    ("!!python/object:argparse.Namespace [1]\n",
     "!!python/object:argparse.Namespace at line 1 must tag a mapping of keys to values, not a sequence"),
    ("!!python/object:argparse.Namespace\ntraining: !!python/object:argparse.Namespace\n  n_iters: 3\n  n_iters: 4\n",
     "duplicate key training.n_iters at line 4 (first at line 3)"),
    ("!!python/object:argparse.Namespace\ntraining: {}\ntraining: {}\n",
     "duplicate key training at line 3 (first at line 2)"),
])
def test_malformed_official_files_are_one_line(tmp_path, text, expected):
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message == f"malformed YAML in {path}: {expected}" or \
        message.startswith(f"malformed YAML in {path}: {expected}"), message
    assert "\n" not in message and len(message) < 250 + len(str(path)), message


def test_an_official_config_with_a_key_we_do_not_know_is_one_line(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(official_config_yml(_with(_ANNEAL, model={"device": "cuda"})))
    with pytest.raises(ConfigError, match=r"^\S+config.yml: unknown config key model.device \(allowed in model: ") as e:
        load_config(path)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------- main.py


def test_official_run_folder_samples_and_resumes(tmp_path, capfd):
    """The run.zip layout as it comes: --test samples, --resume_training continues from step 0 (the official
    checkpoint has no step) with the official Adam state, and then --test samples from the resumed run."""
    cfg = _with(tiny_official(), model={"num_classes": 2})       # --test: 2 levels x 100 steps
    run, log, weights = official_run_folder(tmp_path, AnnealRunner, cfg)

    # --test: the official config has no sampling section: the official 25 samples, 100 steps per level
    rc, err = main_in_process(capfd, "--runner", "AnnealRunner", "--test", "--doc", "mnist", "--run", run,
                              "-o", tmp_path / "samples")
    assert rc == 0, err
    samples = torch.load(tmp_path / "samples" / "samples.pth", weights_only=True)
    assert samples.shape == (25, 1, 8, 8) and torch.isfinite(samples).all() and samples.std() > 0
    assert (tmp_path / "samples" / "samples.png").is_file()
    assert (log / "config.yml").read_text() == official_config_yml(cfg)          # --test changes nothing

    # --resume_training: the official key set trains with its defaults (num_workers 4, test every 100 steps)
    rc, err = main_in_process(capfd, "--runner", "AnnealRunner", "--resume_training", "--doc", "mnist",
                              "--run", run)
    assert rc == 0, err
    stdout = (log / "stdout.txt").read_text()
    assert "is an official-format checkpoint without a step; counting steps from 0" in stdout
    assert sorted(logged_losses(log)) == [(1, "loss"), (2, "loss"), (3, "loss")]
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 3                                                    # n_iters more steps, from 0
    assert int(state["optimizer"]["state"][0]["step"]) == 4                      # Adam went on from its 1 step
    assert set(state["model"]) == set(weights)
    assert any(not torch.equal(state["model"][k], weights[k]) for k in weights)
    # train_loop rewrote config.yml (our plain YAML), and it describes the same run
    assert "!!python" not in (log / "config.yml").read_text()
    assert load_config(log / "config.yml") == config_from_dict(cfg)


def test_official_run_folder_inpaints_evaluates_and_compares_with_an_overlay(tmp_path, capfd):
    """The official config.yml is never edited: --config with --test/--eval/--compare lays only its sampling and eval
    sections over the run's; any other section is refused."""
    cfg = _with(tiny_official(), model={"num_classes": 2})
    run, log, _ = official_run_folder(tmp_path, AnnealRunner, cfg)
    official = (log / "config.yml").read_text()
    overlay = tmp_path / "inpaint.yml"
    overlay.write_text("sampling: {inpainting: true, n_samples: 4, n_steps_each: 3}\n")
    rc, err = main_in_process(capfd, "--test", "--doc", "mnist", "--run", run, "--config", overlay,
                              "-o", tmp_path / "inp")
    assert rc == 0, err
    assert torch.load(tmp_path / "inp" / "inpainting.pth", weights_only=True).shape == (4, 1, 8, 8)
    from test_eval_cli import StandInInception
    torch.jit.save(torch.jit.script(StandInInception()), str(tmp_path / "standin.pt"))
    evaluate = tmp_path / "eval.yml"
    evaluate.write_text(f"eval: {{n_samples: 4, batch_size: 2, max_reference: 20, "
                        f"inception_weights: '{tmp_path / 'standin.pt'}'}}\nsampling: {{n_steps_each: 2}}\n")
    rc, err = main_in_process(capfd, "--eval", "--doc", "mnist", "--run", run, "--config", evaluate,
                              "-o", tmp_path / "ev")
    assert rc == 0, err[-3:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and metrics["checkpoint_step"] is None and metrics["fid"] > 0
    rc, err = main_in_process(capfd, "--compare", "--doc", "mnist", "--run", run, "-o", tmp_path / "cmp")
    assert rc == 0, err
    assert (tmp_path / "cmp" / "comparison.json").is_file()          # the official checkpoint.pth alone
    bad = tmp_path / "bad.yml"
    bad.write_text("sampling: {n_samples: 4}\nmodel: {ngf: 8}\n")
    rc, err = main_in_process(capfd, "--test", "--doc", "mnist", "--run", run, "--config", bad, "-o", tmp_path / "x")
    assert rc == 1 and err == [f"error: {bad}: on a trained run --config may set only sampling, eval, compute and "
                               f"data.root (the network and data come from the run); it sets model"]
    assert (log / "config.yml").read_text() == official


def resumes_two_steps(capfd, runner, doc, run, log, weights):
    """--resume_training of an official folder trains 2 steps from 0, going on from the official Adam state."""
    rc, err = main_in_process(capfd, "--runner", runner, "--resume_training", "--doc", doc, "--run", run)
    assert rc == 0, err
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 2 and int(state["optimizer"]["state"][0]["step"]) == 3
    assert set(state["model"]) == set(weights)


def test_official_baseline_run_folder_samples_and_resumes(tmp_path, capfd):
    """The same for BaselineRunner; its file also carries a section of ours (sampling) inside the Namespace tags."""
    cfg = _with(tiny_official(OFFICIAL_CONFIGS["baseline"]), training={"n_iters": 2})
    cfg["sampling"] = {"n_samples": 4, "n_steps": 20}
    run, log, weights = official_run_folder(tmp_path, BaselineRunner, cfg, doc="baseline")
    rc, err = main_in_process(capfd, "--runner", "BaselineRunner", "--test", "--doc", "baseline", "--run", run,
                              "-o", tmp_path / "samples")
    assert rc == 0, err
    samples = torch.load(tmp_path / "samples" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()
    resumes_two_steps(capfd, "BaselineRunner", "baseline", run, log, weights)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")     # the official 4 workers
def test_official_scorenet_run_folder_evaluates_and_resumes(tmp_path, capfd):
    """ScoreNetRunner folders (official keys without the ``module.`` prefix): --test evaluates, --resume_training
    continues from step 0."""
    cfg = _with(OFFICIAL_CONFIGS["scorenet_mnist"], training={"batch_size": 8, "n_iters": 2},
                data={"dataset": "DIGITS", "image_size": 8}, model={"nef": 8, "ndf": 8})
    run, log, weights = official_run_folder(tmp_path, ScoreNetRunner, cfg, doc="scorenet")
    rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--test", "--doc", "scorenet", "--run", run,
                              "-o", tmp_path / "out")
    assert rc == 0, err
    assert (tmp_path / "out" / "test_loss.json").is_file()
    resumes_two_steps(capfd, "ScoreNetRunner", "scorenet", run, log, weights)


@pytest.mark.parametrize("mode", ["--test", "--resume_training"])
@pytest.mark.parametrize("tag", ["!!python/object/apply:pathlib.Path.touch", "!!python/object:os.system"])
def test_a_run_whose_config_has_another_python_tag_is_refused(tmp_path, capfd, mode, tag):
    """One error line naming the file and the tag; nothing executed, nothing created or changed."""
    marker = tmp_path / "marker"
    cfg = tiny_official()
    run, log, _ = official_run_folder(tmp_path, AnnealRunner, cfg)
    value = f"{tag} [{str(marker)!r}]" if "apply" in tag else f"{tag} {{}}"
    text = official_config_yml(cfg).replace("  ngf: 4\n", f"  ngf: 4\n  sigma: {value}\n")
    (log / "config.yml").write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    checkpoint = (log / "checkpoint.pth").read_bytes()
    rc, err = main_in_process(capfd, "--runner", "AnnealRunner", mode, "--doc", "mnist", "--run", run,
                              "-o", tmp_path / "samples")
    assert rc == 1 and len(err) == 1 and "Traceback" not in "\n".join(err), err
    line = text.splitlines().index(f"  sigma: {value}") + 1
    assert err[0] == (f"error: malformed YAML in {log / 'config.yml'}: the Python tag {tag} at line {line} is refused "
                      f"(the only one read is !!python/object:argparse.Namespace)")
    assert not marker.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (log / "config.yml").read_text() == text and (log / "checkpoint.pth").read_bytes() == checkpoint
