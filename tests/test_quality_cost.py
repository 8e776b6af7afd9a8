"""benchmarks/quality_cost.py end to end on a briefly trained toy run: every combination is drawn with the learned
NCSN and the exact score, network evaluations are counted exactly, the paper's Figure 3 claim holds in its numbers
(annealed Langevin with the exact score gets the mode weights right), and the table, JSON and plot are written."""
import json
import subprocess
import sys

import pytest
from conftest import REPO, run_main
from PIL import Image
from test_toy import tiny_toy_config

LEVELS = 6          # tiny_toy_config's toy.num_sigmas


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    import yaml
    folder = tmp_path_factory.mktemp("quality_cost")
    config = folder / "tiny_toy.yml"
    config.write_text(yaml.safe_dump(tiny_toy_config()))
    res = run_main(["--runner", "ToyRunner", "--config", str(config), "--doc", "toy"], cwd=folder)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_cost.py"), "--doc", "toy", "--n", "400",
                          "--json", "q.json", "--plot", "q.png"], cwd=folder, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return folder, json.loads((folder / "q.json").read_text()), res.stdout


def test_every_combination_with_both_scores_and_exact_evaluation_counts(toy_study):
    _, result, _ = toy_study
    rows = {(r["sampler"], r["weights"], r["denoise"]): r for r in result["rows"]}
    assert len(rows) == len(result["rows"]) == 16 and result["n"] == 400 and result["run"] == "run/logs/toy"
    expected = {("Langevin T=10", False): 10 * LEVELS, ("Langevin T=30", False): 30 * LEVELS,
                ("Langevin T=100", False): 100 * LEVELS, ("Langevin T=100", True): 100 * LEVELS + 1,
                ("PC (RD + Langevin, 1 step)", False): 2 * LEVELS, ("PC (RD + Langevin, 1 step)", True): 2 * LEVELS,
                ("PC (RD + Langevin, 5 steps)", False): 6 * LEVELS}
    for (sampler, weights, denoise), r in rows.items():
        assert weights in ("learned", "exact")
        assert 0 <= r["weight_tv"] <= 1 and r["mmd2"] > -0.05 and r["seconds"] >= 0
        if sampler.startswith("ODE"):
            assert 8 <= r["nfe"] <= 4000      # dopri5: >= 8 calls, one level (at a level) or two (between) each
        else:
            assert r["nfe"] == expected[sampler, denoise]


def test_the_paper_claim_in_numbers(toy_study):
    """Annealed Langevin with the exact score and the paper's T = 100 recovers the 0.8 / 0.2 weights (Figure 3), and
    its samples are as close to the data as i.i.d. draws of its target p_sigma_L are (up to the MMD's noise)."""
    _, result, _ = toy_study
    rows = {(r["sampler"], r["weights"], r["denoise"]): r for r in result["rows"]}
    best = rows["Langevin T=100", "exact", False]
    assert best["weight_tv"] < 0.08
    (floor,) = result["baselines"].values()
    assert floor["weight_tv"] < 0.08 and abs(best["mmd2"] - floor["mmd2"]) < 0.05


def test_table_and_plot(toy_study):
    folder, result, stdout = toy_study
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| sampler | score | denoise | NFE / sample | MMD^2")
    values = [float(line.split("|")[5]) for line in table[1:]]
    assert len(values) == 16 and values == sorted(values)                       # best first
    with Image.open(folder / "q.png") as im:
        assert im.format == "PNG" and im.width > 500


def test_refuses_a_missing_run(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_cost.py"), "--doc", "nothing"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no trained run" in res.stderr and "Traceback" not in res.stderr


def test_the_nfe_grid_counts_each_budget_and_replots(toy_study, tmp_path):
    """--nfe-grid with two seeds on the toy run: the Karras samplers at each budget cost exactly what their plan
    says (never more than the budget), Langevin and PC at the T that fits the 6 levels; --from-json replots."""
    from sampling.karras import planned_run
    folder, _, _ = toy_study
    out = tmp_path / "grid.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_cost.py"), "--doc", "toy", "--n", "200",
                          "--nfe-grid", "--methods", "heun,dpmpp_2m,langevin", "--seeds", "2", "--json", str(out)],
                         cwd=folder, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    grid = json.loads(out.read_text())
    assert grid["nfe_grid"] and grid["seeds"] == [1234, 1235] and grid["levels"] == len(grid["sigmas"]) == LEVELS
    rows = grid["rows"]
    langevin = sorted({r["nfe"] for r in rows if r["family"] == "langevin" and not r["denoise"]})
    assert langevin == [LEVELS * 166]                       # the largest T (budget // 6) also without denoising
    with_denoising = [LEVELS * t + 1 for t in (1, 3, 5, 8, 16, 33, 166)]    # T = budget // 6, one step more
    assert sorted({r["nfe"] for r in rows if r["family"] == "langevin"}) == sorted(with_denoising + langevin)
    sigmas = grid["sigmas"]
    for r in rows:
        if r["family"] in ("heun", "dpmpp_2m"):
            budget = int(r["sampler"].rsplit(" ", 1)[1])
            assert r["nfe"] == planned_run(r["family"], sigmas, budget, denoise=r["denoise"])[1] <= budget
    combinations = {(r["sampler"], r["weights"], r["denoise"]) for r in rows}     # the toy: learned and exact
    assert {r["seed"] for r in rows} == {1234, 1235} and len(rows) == 2 * len(combinations)
    table = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(combinations)                               # the head, one line per combination
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_cost.py"), "--from-json", str(out),
                          "--plot", str(tmp_path / "grid.png")], cwd=folder, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.width > 500

