"""--eval and --compare from the command line on a tiny digits run: sample export (resumable, seeded per batch, the
same under torchrun), metrics.json, the model comparison, and bad input.  A small TorchScript stand-in with the FID
Inception's calling convention replaces the 87 MB network here (tests/test_evaluation_metrics.py runs the real one)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_digits_config

import evaluation.export
import main as cli

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check_setup import StandInInception  # noqa: E402  (one stand-in, shared with the device check)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained tiny AnnealRunner run (digits, ngf 4, 6 steps) with an eval section and stand-in weights."""
    root = tmp_path_factory.mktemp("evalrun")
    torch.manual_seed(0)
    weights = root / "standin.pt"
    torch.jit.save(torch.jit.script(StandInInception()), str(weights))
    cfg = tiny_digits_config(model={"ngf": 4}, eval={"n_samples": 10, "batch_size": 4, "max_reference": 50,
                                                    "inception_weights": str(weights)},
                             sampling={"n_steps_each": 2})
    (root / "tiny.yml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["--config", str(root / "tiny.yml"), "--doc", "e", "--run", str(root / "run")]) == 0
    return root


def evaluate(root, out, *extra):
    return cli.main(["--eval", "--doc", "e", "--run", str(root / "run"), "-o", str(out), *extra])


def test_eval_exports_scores_and_reruns_to_the_same_file(tiny_run, tmp_path, monkeypatch, capfd):
    out = tmp_path / "ev"
    assert evaluate(tiny_run, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 10 and metrics["n_reference"] == 50 and metrics["checkpoint_step"] == 6
    assert metrics["ema"] is False                                      # a run trained without model.ema
    assert metrics["fid"] > 0 and np.isfinite(metrics["kid"]) and metrics["is"] >= 1      # logits: IS too
    assert metrics["reference"] == "DIGITS/train/8px/1ch/subset50" and not metrics["reference_cached"]
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.dtype == np.uint8 and samples.shape == (10, 8, 8, 1) and samples.std() > 0
    assert (out / "samples.png").is_file()

    # interrupted after two of the three batches, then run again: the same file, bit for bit
    real = evaluation.export.export_batches

    def killed(draw, n, batch_size, seed, folder, batches=None, progress=True):
        real(draw, n, batch_size, seed, folder, batches=[0, 1], progress=progress)
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluation.export, "export_batches", killed)
    import commands.evaluate
    monkeypatch.setattr(commands.evaluate, "export_batches", killed)
    part = tmp_path / "part"
    assert evaluate(tiny_run, part) == 130
    assert sorted(p.name for p in (part / "batches").iterdir()) == ["batch_000000.npy", "batch_000001.npy"]
    monkeypatch.undo()
    capfd.readouterr()
    assert evaluate(tiny_run, part) == 0
    assert "drew 1 of 3 batches" in capfd.readouterr().err
    assert np.array_equal(np.load(part / "samples.npz")["samples"], samples)
    again = json.loads((part / "metrics.json").read_text())
    assert again["fid"] == metrics["fid"] and again["reference_cached"]          # statistics computed once

    # another seed is another export: refused in that folder, a different set elsewhere
    capfd.readouterr()
    assert evaluate(tiny_run, part, "--seed", "5") == 1
    assert capfd.readouterr().err.strip().splitlines()[-1] == (
        f"error: {part} holds an export with other settings (seed); use another -o or --overwrite")
    assert evaluate(tiny_run, tmp_path / "seed5", "--seed", "5") == 0
    assert not np.array_equal(np.load(tmp_path / "seed5" / "samples.npz")["samples"], samples)


def test_batches_depend_on_seed_and_index_only():
    """Batch k of an export is the same whichever batches are drawn before it (order, interruptions, processes)."""
    def draw(size):
        return (torch.rand(size, 2, 2, 1) * 255).to(torch.uint8).numpy()

    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        for d in (a, b):
            (Path(d) / "batches").mkdir()
        evaluation.export.export_batches(draw, 7, 3, seed=11, folder=a, progress=False)
        for k in (2, 0, 1):                                                       # another order
            torch.rand(5)                                                         # and other use of the RNG between
            evaluation.export.export_batches(draw, 7, 3, seed=11, folder=b, batches=[k], progress=False)
        assert np.array_equal(np.load(evaluation.export.assemble(a, 7, 3))["samples"],
                              np.load(evaluation.export.assemble(b, 7, 3))["samples"])


def test_two_processes_under_torchrun_export_the_same_set_as_one(tiny_run, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(REPO / "main.py"), "--eval", "--doc", "e", "-o", str(tmp_path / "two"), "--device",
                        "cpu"], cwd=tiny_run, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert evaluate(tiny_run, tmp_path / "one") == 0
    assert np.array_equal(np.load(tmp_path / "two" / "samples.npz")["samples"],
                          np.load(tmp_path / "one" / "samples.npz")["samples"])
    two, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("two", "one"))
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-7)          # same samples; the eigensolver's last bits


@pytest.mark.parametrize("change, argv, message", [
    ({"eval": {"n_samples": 1}}, [], "error: eval.n_samples must be at least 2 to compute FID and KID, got 1"),
    ({"eval": {"n_samples": 0}}, [], r"error: .*config.yml: eval.n_samples must be > 0, got 0"),
    ({"eval": {"inception_weights": "missing.pt"}}, [], "error: Inception weights file missing.pt not found; .*"),
    ({}, ["--runner", "ToyRunner"], "error: --eval is not available for ToyRunner: it has no image sampler to "
                                    "evaluate"),
])
def test_eval_bad_input_is_one_line_and_writes_no_samples(tiny_run, tmp_path, capfd, change, argv, message):
    import re
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    saved = run / "logs" / "e" / "config.yml"
    cfg = yaml.safe_load(saved.read_text())
    for section, values in change.items():
        cfg[section].update(values)
    saved.write_text(yaml.safe_dump(cfg))
    capfd.readouterr()
    rc = cli.main(["--eval", "--doc", "e", "--run", str(run), "-o", str(tmp_path / "out"), *argv])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 1 and re.fullmatch(message, err[-1]), err
    assert not (tmp_path / "out" / "samples.npz").exists() and not (tmp_path / "out" / "metrics.json").exists()


def test_compare_ranks_the_checkpoints_of_a_run(tiny_run, tmp_path):
    assert cli.main(["--compare", "--doc", "e", "--run", str(tiny_run / "run"), "-o", str(tmp_path / "cmp")]) == 0
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["step"] for r in table["rows"]] == [3, 6]
    assert table["best"]["step"] in (3, 6) and (tmp_path / "cmp" / "comparison.png").is_file()


def test_eval_uses_and_records_the_ema_weights(tiny_run, tmp_path):
    """A checkpoint with EMA weights is evaluated with them ("ema": true in metrics.json and the export's manifest,
    other samples than its raw weights give); an unfinished export of the raw weights is not continued with them."""
    import shutil

    from training.checkpoint import load_checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    log = run / "logs" / "e"
    state = load_checkpoint(log / "checkpoint.pth")
    raw = tmp_path / "raw"
    assert cli.main(["--eval", "--doc", "e", "--run", str(run), "-o", str(raw)]) == 0
    torch.save({**state, "ema": {k: v * 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}},
               log / "checkpoint.pth")
    out = tmp_path / "ema"
    assert cli.main(["--eval", "--doc", "e", "--run", str(run), "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ema"] is True and json.loads((out / evaluation.export.MANIFEST).read_text())["ema"] is True
    assert not np.array_equal(np.load(out / "samples.npz")["samples"], np.load(raw / "samples.npz")["samples"])
    (raw / "metrics.json").unlink()
    (raw / "samples.npz").unlink()                       # an unfinished export of the raw weights
    assert cli.main(["--eval", "--doc", "e", "--run", str(run), "-o", str(raw)]) == 1
