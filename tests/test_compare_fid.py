"""--compare with eval.compare_n_samples: FID and KID of every checkpoint beside its test loss, the best checkpoint
by each, a step range, and an interrupted comparison that continues to the same table."""
import csv
import json

import numpy as np
import pytest
import yaml
from conftest import main_in_process

import commands.compare
import main as cli

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run (checkpoints 3 and 6)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def compare(root, out, overlay, *extra):
    return cli.main(["--compare", "--doc", "e", "--run", str(root / "run"), "-o", str(out), "--config",
                     str(overlay), *extra])


@pytest.fixture
def overlay(tmp_path):
    path = tmp_path / "fastfid.yml"
    path.write_text(yaml.safe_dump({"eval": {"compare_n_samples": 8}}))
    return path


def test_fid_per_checkpoint_beside_the_test_loss(tiny_run, tmp_path, overlay):
    out = tmp_path / "cmp"
    assert compare(tiny_run, out, overlay) == 0
    table = json.loads((out / "comparison.json").read_text())
    rows = table["rows"]
    assert [r["checkpoint"] for r in rows] == ["checkpoint_3.pth", "checkpoint_6.pth"]
    assert all(r["fid"] > 0 and np.isfinite(r["kid"]) and np.isfinite(r["mean"]) for r in rows)
    assert rows[0]["fid"] != rows[1]["fid"]
    best = table["best_by"]
    assert best["fid"]["checkpoint"] == min(rows, key=lambda r: r["fid"])["checkpoint"]
    assert best["kid"]["kid"] == min(r["kid"] for r in rows) and best["mean"] == table["best"]
    assert table["settings"]["compare_n_samples"] == 8
    with open(out / "comparison.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:6] == ["step", "checkpoint", "mean", "stderr", "fid", "kid"]
    # each checkpoint's samples are those --eval draws of it: the same seeds, the same export
    scores = json.loads((out / "samples" / "checkpoint_6" / "scores.json").read_text())
    assert scores["scores"]["fid"] == rows[1]["fid"] and scores["settings"]["seed"] == 1234


def test_an_interrupted_comparison_continues_to_the_same_table(tiny_run, tmp_path, overlay, monkeypatch):
    whole = tmp_path / "whole"
    assert compare(tiny_run, whole, overlay) == 0
    out = tmp_path / "cut"
    real, calls = commands.compare.image_scores, []

    def cut(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt                 # during the second checkpoint
        return real(*args, **kwargs)
    monkeypatch.setattr(commands.compare, "image_scores", cut)
    assert compare(tiny_run, out, overlay) == 130
    monkeypatch.undo()
    assert (out / "samples" / "checkpoint_3" / "scores.json").is_file()
    again = []
    monkeypatch.setattr(commands.compare, "image_scores", lambda *a, **k: (again.append(1), real(*a, **k))[1])
    assert compare(tiny_run, out, overlay) == 0
    assert len(again) == 1                          # only the checkpoint it stopped at is scored again
    a, b = (json.loads((f / "comparison.json").read_text()) for f in (whole, out))
    assert a["rows"] == b["rows"] and a["best_by"] == b["best_by"]


def test_the_step_range(tiny_run, tmp_path, capfd):
    rng = tmp_path / "range.yml"
    rng.write_text(yaml.safe_dump({"eval": {"begin_step": 4}}))
    out = tmp_path / "r"
    assert compare(tiny_run, out, rng) == 0
    assert [r["step"] for r in json.loads((out / "comparison.json").read_text())["rows"]] == [6]
    empty = tmp_path / "empty.yml"
    empty.write_text(yaml.safe_dump({"eval": {"begin_step": 7}}))
    rc, err = main_in_process(capfd, "--compare", "--doc", "e", "--run", tiny_run / "run", "-o", tmp_path / "e",
                              "--config", empty)
    assert rc == 1 and err[-1] == ("error: model comparison: no checkpoint between eval.begin_step 7 and "
                                   "eval.end_step None (the run's steps: 3, 6)"), err
