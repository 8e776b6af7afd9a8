"""The weak cases of the new surfaces, each as a user meets it: --resume_training --config with one section, a run
killed during its first config write, --test --overwrite over another chain, options a runner cannot honour,
non-finite EMA weights, the divergence hint of each sampler, and temporary files of a killed --eval."""
import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import logged_losses, main_in_process, tiny_digits_config, write_yaml
from test_eval_cli import evaluate

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run with the stand-in Inception
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_resume_with_a_config_of_one_section_keeps_the_rest_of_the_run(tmp_path, capfd):
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config(model={"ngf": 4}))
    assert main_in_process(capfd, "--config", cfg, "--doc", "r", "--run", run)[0] == 0
    more = write_yaml(tmp_path / "more.yml", {"training": {"n_iters": 8}})
    rc, err = main_in_process(capfd, "--config", more, "--doc", "r", "--run", run, "--resume_training")
    assert rc == 0, err
    saved = yaml.safe_load((run / "logs" / "r" / "config.yml").read_text())
    assert saved["data"]["dataset"] == "DIGITS" and saved["model"]["ngf"] == 4 and saved["training"]["n_iters"] == 8
    assert max(step for step, tag in logged_losses(run / "logs" / "r") if tag == "loss") == 8


def test_a_run_killed_during_its_first_config_write_can_be_started_again(tmp_path, capfd):
    run, log = tmp_path / "run", tmp_path / "run" / "logs" / "k"
    log.mkdir(parents=True)
    (log / f".config.yml.tmp{dead_pid()}").write_text("training:\n  batch_")     # the half-written first config
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config(model={"ngf": 4}))
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "k", "--run", run)
    assert rc == 0, err
    assert (log / "checkpoint.pth").is_file() and not list(log.glob(".config.yml.tmp*"))


def test_a_run_folder_with_other_files_is_still_refused(tmp_path, capfd):
    log = tmp_path / "run" / "logs" / "k"
    log.mkdir(parents=True)
    (log / f".config.yml.tmp{dead_pid()}").write_text("x")
    (log / "notes.txt").write_text("mine")
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config(model={"ngf": 4}))
    rc, err = main_in_process(capfd, "--config", cfg, "--doc", "k", "--run", tmp_path / "run")
    assert rc == 1 and err[-1].startswith("error: run 'k' already exists"), err
    assert (log / "notes.txt").read_text() == "mine"


def test_test_overwrite_leaves_no_frames_of_an_earlier_chain(tiny_sampling_run, tmp_path, capfd):
    out = tmp_path / "out"
    frames = write_yaml(tmp_path / "frames.yml", {"sampling": {"save_all_frames": True, "n_steps_each": 2}})
    assert main_in_process(capfd, "--test", "--doc", "d", "--run", tiny_sampling_run, "-o", out,
                           "--config", frames)[0] == 0
    assert len(list(out.glob("image_*.png"))) >= 4                           # every step of the chain
    (out / "mine.txt").write_text("kept")
    assert main_in_process(capfd, "--test", "--doc", "d", "--run", tiny_sampling_run, "-o", out, "--overwrite")[0] == 0
    assert not list(out.glob("image_*")) and (out / "samples.png").is_file() and (out / "mine.txt").is_file()


def test_the_baseline_refuses_a_sampler_it_cannot_run(tmp_path, capfd):
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "b.yml", tiny_digits_config(model={"ngf": 4}))
    assert main_in_process(capfd, "--runner", "BaselineRunner", "--config", cfg, "--doc", "b", "--run", run)[0] == 0
    ode = write_yaml(tmp_path / "ode.yml", {"sampling": {"method": "ode"}})
    rc, err = main_in_process(capfd, "--runner", "BaselineRunner", "--test", "--doc", "b", "--run", run, "-o",
                              tmp_path / "out", "--config", ode)
    assert rc == 1 and err[-1] == ("error: sampling.method ode needs the noise levels of the AnnealRunner; the "
                                   "BaselineRunner samples with plain Langevin dynamics (sampling.n_steps, "
                                   "sampling.step_lr)"), err


def test_nonfinite_ema_weights_beside_finite_raw_weights_are_named(tmp_path, capfd):
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "e.yml", tiny_digits_config(model={"ngf": 4, "ema": True}))
    assert main_in_process(capfd, "--config", cfg, "--doc", "e", "--run", run)[0] == 0
    path = run / "logs" / "e" / "checkpoint.pth"
    state = torch.load(path, weights_only=False)
    key = next(k for k, v in state["ema"].items() if v.is_floating_point())
    state["ema"][key] = torch.full_like(state["ema"][key], float("nan"))
    torch.save(state, path)
    rc, err = main_in_process(capfd, "--test", "--doc", "e", "--run", run, "-o", tmp_path / "out")
    assert rc == 1 and err[-1].startswith(f"error: checkpoint {path}: its EMA weights (model.ema, used for sampling) "
                                          f"hold non-finite values ({key}") \
        and err[-1].endswith("while its raw weights are finite; use an earlier checkpoint_<step>.pth"), err


@pytest.mark.parametrize("method, keys, hint", [
    ("pc", {"snr": 1e30, "n_steps_each": 1}, "a smaller sampling.snr may help: the corrector's step comes from it"),
    ("langevin", {"step_lr": 1e38}, "a smaller sampling.step_lr may help")])
def test_the_divergence_hint_names_the_step_of_the_sampler(tiny_sampling_run, tmp_path, capfd, method, keys, hint):
    overlay = write_yaml(tmp_path / "s.yml", {"sampling": {"method": method, **keys}})
    rc, err = main_in_process(capfd, "--test", "--doc", "d", "--run", tiny_sampling_run, "-o", tmp_path / "out",
                              "--config", overlay)
    assert rc == 1 and err[-1].startswith("error: sampling diverged: ") and err[-1].endswith(f"nothing written "
                                                                                            f"({hint})"), err


def test_a_rerun_of_a_killed_eval_removes_its_temporary_files(tiny_run, tmp_path):
    out = tmp_path / "ev"
    assert evaluate(tiny_run, out) == 0
    manifest = json.loads((out / "export.json").read_text())
    pid = dead_pid()
    stale = [out / f".samples.npz.tmp{pid}", out / "batches" / f".batch_000001.npy.tmp{pid}"]
    for p in stale:
        p.write_bytes(b"half")
    (out / "batches" / "batch_000001.npy").unlink()                     # the batch it was writing
    assert evaluate(tiny_run, out) == 0
    assert not [p for p in stale if p.exists()]
    assert json.loads((out / "export.json").read_text()) == manifest
