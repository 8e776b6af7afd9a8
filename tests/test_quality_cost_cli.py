"""benchmarks/quality_cost.py checks its flags and its run like main.py: a bad flag or run is one error line and a
non-zero exit, before any sample is drawn."""
import sys

import pytest
import torch
from conftest import REPO, tiny_digits_config, write_yaml

import main as cli

sys.path.insert(0, str(REPO / "benchmarks"))
import quality_cost  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny digits runs under <root>/run: 'a' (AnnealRunner with EMA) and 's' (ScoreNetRunner)."""
    root = tmp_path_factory.mktemp("qc")
    cfg = write_yaml(root / "a.yml", tiny_digits_config(model={"ngf": 4, "ema": True}))
    assert cli.main(["--config", str(cfg), "--doc", "a", "--run", str(root / "run")]) == 0
    assert cli.main(["--runner", "ScoreNetRunner", "--doc", "s", "--run",
                     str(root / "run"), "--config", str(write_yaml(root / "s.yml", {
                         **tiny_digits_config(), "model": {"nef": 8, "ndf": 8},
                         "training": {"batch_size": 8, "n_iters": 2, "snapshot_freq": 2, "algo": "ssm",
                                      "noise_std": 0.01}}))]) == 0
    return root / "run"


def run_study(capsys, *argv):
    capsys.readouterr()
    try:
        rc = quality_cost.main([str(a) for a in argv])
    except SystemExit as e:          # argparse
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("n, why", [("-3", "must be at least 2"), ("1", "must be at least 2"),
                                    ("0", "must be at least 2"), ("x", "must be a whole number")])
def test_bad_sample_counts_are_refused(runs, capsys, n, why):
    rc, err = run_study(capsys, "--doc", "a", "--run", runs, "--n", n)
    assert rc == 2 and err[-1].startswith("quality_cost.py: error: argument --n: ") and why in err[-1], err


def test_a_json_path_that_is_a_folder_is_refused_before_any_work(runs, tmp_path, capsys):
    rc, err = run_study(capsys, "--doc", "a", "--run", runs, "--json", tmp_path)
    assert rc == 2 and err[-1].endswith(f"argument --json: {tmp_path} is a folder; name a file"), err


def test_a_missing_run_is_one_line(tmp_path, capsys):
    rc, err = run_study(capsys, "--doc", "none", "--run", tmp_path)
    assert rc == 1 and err == [f"error: no trained run {tmp_path / 'logs' / 'none'} (no config.yml); train it "
                               f"first, or pass --run/--doc"]


def test_a_scorenet_run_is_one_line(runs, capsys):
    rc, err = run_study(capsys, "--doc", "s", "--run", runs)
    assert rc == 1 and len(err) == 1 and err[0].startswith(f"error: {runs / 'logs' / 's'} is not an AnnealRunner "
                                                           f"run whose checkpoint can be sampled"), err


def test_an_empty_checkpoint_is_one_line(runs, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(runs / "logs" / "a", copy / "logs" / "a")
    (copy / "logs" / "a" / "checkpoint.pth").write_bytes(b"")
    rc, err = run_study(capsys, "--doc", "a", "--run", copy)
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and "checkpoint.pth" in err[0], err


def test_nonfinite_ema_weights_are_named(runs, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(runs / "logs" / "a", copy / "logs" / "a")
    path = copy / "logs" / "a" / "checkpoint.pth"
    state = torch.load(path, weights_only=False)
    key = next(k for k, v in state["ema"].items() if v.is_floating_point())
    state["ema"][key] = torch.full_like(state["ema"][key], float("nan"))
    torch.save(state, path)
    rc, err = run_study(capsys, "--doc", "a", "--run", copy)
    assert rc == 1 and len(err) == 1 and f"its EMA weights hold non-finite values ({key}" in err[0], err


@pytest.mark.parametrize("argv, message", [
    (["--nfe-grid", "--methods", "heun,bogus"], "argument --methods: unknown sampler bogus; choose from langevin"),
    (["--methods", "heun"], "--methods and --budgets select rows of --nfe-grid"),
    (["--budgets", "35"], "--methods and --budgets select rows of --nfe-grid"),
    (["--nfe-grid", "--budgets", "10,x"], "argument --budgets: '10,x' is not a comma-separated list of whole"),
    (["--nfe-grid", "--budgets", "0,35"], "argument --budgets: '0,35' is not a comma-separated list of whole"),
    (["--seeds", "0"], "argument --seeds: must be at least 1, got 0")])
def test_bad_grid_flags_are_refused_before_any_work(runs, capsys, argv, message):
    rc, err = run_study(capsys, "--doc", "a", "--run", runs, *argv)
    assert rc == 2 and err[-1].startswith("quality_cost.py: error: ") and message in err[-1], err


def test_replotting_a_json_that_is_not_a_grid_is_one_line(tmp_path, capsys):
    path = tmp_path / "q.json"
    path.write_text('{"rows": []}')
    rc, err = run_study(capsys, "--from-json", path)
    assert rc == 1 and err == [f"error: --from-json {path}: not the JSON of a --nfe-grid study"]


def test_budgets_select_the_grid_rows():
    """--budgets keeps the Karras samplers at the given budgets up to 200 (plain rows only at 35 and 100) and annealed
    Langevin at T = budget // L; the default grid is the budgets 10 ... 1000."""
    def budgets_of(grid, method):
        return sorted({(int(keys["nfe"]), denoise) for _, _, m, keys, denoise, _ in grid if m == method})
    grid = quality_cost.nfe_grid(10, ["heun", "langevin"], (10, 100, 1000))
    assert budgets_of(grid, "heun") == [(10, True), (100, False), (100, True)]
    assert sorted({(keys["n_steps_each"], d) for _, _, m, keys, d, _ in grid if m == "langevin"}) == [
        (1, True), (10, True), (100, False), (100, True)]
    full = quality_cost.nfe_grid(10, ["heun"])
    assert budgets_of(full, "heun") == [(10, True), (20, True), (35, False), (35, True), (50, True), (100, False),
                                        (100, True), (200, True)]
    assert quality_cost.budget_list("100,10,10") == (10, 100)
