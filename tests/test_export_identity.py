"""An --eval export records what drew it (step, a SHA-256 of the weights, sampler settings, seed): an interrupted
export of a run that was trained again in the meantime is refused in one line, or with --overwrite started over;
batches of two models are never mixed."""
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_digits_config

import evaluation.export
import main as cli

pytest_plugins = ["test_eval_cli"]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def train(root, lr):
    from test_eval_cli import StandInInception
    weights = root / "standin.pt"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(StandInInception()), str(weights))
    cfg = tiny_digits_config(model={"ngf": 4}, optim={"lr": lr}, sampling={"n_steps_each": 2},
                             eval={"n_samples": 12, "batch_size": 4, "max_reference": 50,
                                   "inception_weights": str(weights)})
    (root / "tiny.yml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["--config", str(root / "tiny.yml"), "--doc", "e", "--run", str(root / "run"),
                     "--overwrite"]) == 0


def evaluate(root, out, *extra):
    return cli.main(["--eval", "--doc", "e", "--run", str(root / "run"), "-o", str(out), *extra])


def test_a_retrained_run_never_mixes_into_an_unfinished_export(tmp_path, monkeypatch, capfd):
    train(tmp_path, lr=1e-3)
    out = tmp_path / "ev"
    real = evaluation.export.export_batches

    def killed(draw, n, batch_size, seed, folder, batches=None, progress=True):
        real(draw, n, batch_size, seed, folder, batches=[0], progress=progress)
        raise KeyboardInterrupt
    monkeypatch.setattr("commands.evaluate.export_batches", killed)
    assert evaluate(tmp_path, out) == 130
    monkeypatch.undo()
    first = json.loads((out / "export.json").read_text())
    assert len(first["weights"]) == 64 and first["step"] == 6

    train(tmp_path, lr=3e-3)                        # the same step, other weights
    capfd.readouterr()
    assert evaluate(tmp_path, out) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {out} holds an export with other settings (weights) (drawn by other weights: was "
                       f"the run trained again?); use another -o or --overwrite"), err
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["batch_000000.npy"]     # left as it was

    assert evaluate(tmp_path, out, "--overwrite") == 0        # started over: every batch from the new weights
    assert json.loads((out / "export.json").read_text())["weights"] != first["weights"]
    fresh = tmp_path / "fresh"
    assert evaluate(tmp_path, fresh) == 0
    assert np.array_equal(np.load(out / "samples.npz")["samples"], np.load(fresh / "samples.npz")["samples"])
