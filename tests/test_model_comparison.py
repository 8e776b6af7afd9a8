"""Model comparison: the test loss on fixed noise (evaluation/held_out.py) and the checkpoint table
(commands/compare.py) on a tiny AnnealRunner run trained in-process on the digits."""
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_digits_config

import main as cli
from commands.compare import compare_checkpoints, find_checkpoints
from commands.context import RunContext
from configs import config_from_dict
from datasets import data_transform
from errors import UserError
from evaluation.held_out import fixed_noise, fixed_transform, per_level_test_loss
from losses import anneal_dsm_per_example
from models import CondRefineNetDilated
from runners import AnnealRunner, BaselineRunner, ScoreNetRunner
from runners.anneal_runner import make_sigmas
from training.checkpoint import load_checkpoint

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ the estimator


def test_fixed_transform_is_the_training_transform_with_its_noise_given():
    d = config_from_dict(tiny_digits_config()).data
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(3)
    expected = data_transform(x, d)
    torch.manual_seed(3)
    assert torch.equal(fixed_transform(True, False)(x, torch.rand_like(x)), expected)
    assert torch.equal(fixed_transform(False, False)(x, None), x)


def tiny_ncsn(num_classes=4):
    torch.manual_seed(0)
    return CondRefineNetDilated(channels=1, image_size=8, ngf=4, num_classes=num_classes).eval()


def test_every_image_at_every_level_by_hand_and_independent_of_batch_size():
    model, sigmas, images = tiny_ncsn(), torch.tensor([1.0, 0.4, 0.1]), torch.rand(11, 1, 8, 8)
    out = per_level_test_loss(model, images.split(4), sigmas, seed=7, weight_power=2.0, progress=False)
    transform = fixed_transform()
    by_hand = torch.empty(11, 3)
    for n in range(11):
        u, z, _ = fixed_noise(7, n, (1, 8, 8), 3)
        x = transform(images[n:n + 1], u.unsqueeze(0))
        for i in range(3):          # the training loss at level i with the same noise (Eq. 6, lambda = sigma^2)
            with torch.no_grad():
                by_hand[n, i] = anneal_dsm_per_example(model, x, torch.tensor([i]), sigmas, 2.0, noise=z[i:i + 1])[0]
    # float32 rounding only: the target is z / sigma here, (x~ - x) / sigma^2 in the training loss
    torch.testing.assert_close(out["per_image"].float(), by_hand, rtol=1e-4, atol=1e-6)
    assert out["per_level"] == pytest.approx(by_hand.double().mean(0).tolist(), rel=1e-4)
    assert out["mean"] == pytest.approx(float(by_hand.double().mean()), rel=1e-4)
    assert out["n_images"] == 11 and out["sigmas"] == pytest.approx([1.0, 0.4, 0.1])
    other = per_level_test_loss(model, [(b, None) for b in images.split(7)], sigmas, seed=7, progress=False)
    assert other["per_level"] == pytest.approx(out["per_level"], rel=1e-4)       # batches of 7, with labels
    assert per_level_test_loss(model, images.split(4), sigmas, seed=7, max_images=5, progress=False)["per_image"] \
        .shape == (5, 3)


def gaussian_batches(s, n=3000, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(11)
    return (s * torch.randn(n, *shape, generator=g)).split(500)


@pytest.mark.parametrize("algo", ["dsm", "ssm"])
def test_the_exact_score_of_gaussian_data_gives_the_known_loss(algo):
    """Data N(0, s^2 I) in D = 16 dimensions; perturbed by sigma its score is -x / (s^2 + sigma^2).  Eq. 6 with
    lambda = sigma^2 at that score is 0.5 D s^2 / (s^2 + sigma^2) (DSM: its minimum over score functions) and
    -0.5 D sigma^2 / (s^2 + sigma^2) (SSM); a wrong score (scaled by 0.7) costs more."""
    s, d, sigmas = 0.5, 16, torch.tensor([1.0, 0.3, 0.05])

    def score(scale):
        return lambda x, labels: -scale * x / (s ** 2 + sigmas[labels].view(-1, 1, 1, 1) ** 2)

    def loss(scale):
        return per_level_test_loss(score(scale), gaussian_batches(s), sigmas, seed=1, weight_power=2.0, algo=algo,
                                   n_particles=2, transform=lambda x, u: x, progress=False)

    exact = loss(1.0)
    big = sigmas.double() ** 2 + s ** 2
    expected = (0.5 * d * s ** 2 / big) if algo == "dsm" else (-0.5 * d * sigmas.double() ** 2 / big)
    assert exact["per_level"] == pytest.approx(expected.tolist(), rel=0.04)
    assert exact["mean"] == pytest.approx(float(expected.mean()), rel=0.04)
    assert all(w > e for w, e in zip(loss(0.7)["per_level"], exact["per_level"]))


def test_unconditional_ssm_on_raw_data():
    """ScoreNetRunner at noise_std 0: SSM of the exact score of N(0, s^2 I) is -D / (2 s^2), unweighted."""
    s = 0.5
    out = per_level_test_loss(lambda x: -x / s ** 2, gaussian_batches(s), [0.0], algo="ssm", weight_power=0.0,
                              conditional=False, transform=lambda x, u: x, progress=False)
    assert out["mean"] == pytest.approx(-16 / (2 * s ** 2), rel=0.04)


def test_fixed_seed_is_bitwise_repeatable_and_leaves_the_global_rng_alone():
    model, sigmas, images = tiny_ncsn(), torch.tensor([1.0, 0.2]), torch.rand(6, 1, 8, 8)
    state = torch.get_rng_state()
    a = per_level_test_loss(model, images.split(3), sigmas, seed=5, progress=False)
    torch.manual_seed(999)                       # the global RNG has no say
    b = per_level_test_loss(model, images.split(3), sigmas, seed=5, progress=False)
    torch.set_rng_state(state)
    c = per_level_test_loss(model, images.split(3), sigmas, seed=6, progress=False)
    assert torch.equal(a["per_image"], b["per_image"]) and a["mean"] == b["mean"]
    assert not torch.equal(a["per_image"], c["per_image"])
    assert torch.equal(torch.get_rng_state(), state)
    for n in range(3):
        first, again = fixed_noise(5, n, (1, 8, 8), 2, 1), fixed_noise(5, n, (1, 8, 8), 2, 1)
        assert all(torch.equal(p, q) for p, q in zip(first, again))


# ------------------------------------------------------------------------------------------------ the table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny AnnealRunner run trained in-process: checkpoint_2.pth, checkpoint_4.pth, checkpoint_6.pth."""
    tmp = tmp_path_factory.mktemp("cmp")
    cfg = tiny_digits_config(training={"n_iters": 6, "snapshot_freq": 2, "test_freq": 100})
    (tmp / "c.yml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["--config", str(tmp / "c.yml"), "--doc", "t", "--run", str(tmp / "run")]) == 0
    return tmp / "run", config_from_dict(cfg)


def runner_for(run_dir, config, log=None, cls=AnnealRunner):
    ctx = dataclasses.replace(RunContext.of_run(run_dir, "t", cls.__name__, command="compare", image_folder="x"),
                              log=Path(log or run_dir / "logs" / "t"))
    return cls(ctx, config, CPU)


def test_checkpoints_of_a_run_are_compared_and_the_best_is_named(run, tmp_path, caplog):
    run_dir, config = run
    caplog.set_level("INFO")
    table = compare_checkpoints(runner_for(run_dir, config), tmp_path / "out", seed=0, progress=False)
    rows = table["rows"]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert [r["checkpoint"] for r in rows] == ["checkpoint_2.pth", "checkpoint_4.pth", "checkpoint_6.pth"]
    best = min(rows, key=lambda r: r["mean"])
    assert table["best"] == {k: best[k] for k in ("step", "checkpoint", "mean")}
    assert table["settings"]["n_images"] == 180 and table["settings"]["seed"] == 0
    assert table["settings"]["sigmas"] == pytest.approx(make_sigmas(config, CPU).tolist())
    # training lowers the loss: at step 6 it is below step 2 on average and at most levels
    first, last = rows[0], rows[-1]
    assert last["mean"] < first["mean"]
    assert sum(b < a for a, b in zip(first["per_level"], last["per_level"])) >= 3
    assert any(f"best checkpoint: {best['checkpoint']}" in r.getMessage() for r in caplog.records)

    out = tmp_path / "out"
    assert (out / "comparison.png").stat().st_size > 0
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["best"] == table["best"] and len(saved["rows"]) == 3
    with open(out / "comparison.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0][:4] == ["step", "checkpoint", "mean", "stderr"] and len(lines[0]) == 4 + 4
    assert lines[0][4].startswith("level_0_sigma_1")
    assert [line[0] for line in lines[1:]] == ["2", "4", "6"]
    assert float(lines[3][2]) == rows[2]["mean"]
    print("\ntiny run:", [(r["step"], round(r["mean"], 4), [round(v, 4) for v in r["per_level"]]) for r in rows])


def test_same_weights_under_two_names_and_an_official_snapshot(run, tmp_path):
    """An official list-format snapshot (no step inside) takes its step from its name; the same weights in our format
    under another name give the identical row: every checkpoint sees the same noise."""
    run_dir, config = run
    log = tmp_path / "logs" / "t"
    log.mkdir(parents=True)
    state = load_checkpoint(run_dir / "logs" / "t" / "checkpoint_4.pth")
    torch.save([{"module." + k: v for k, v in state["model"].items()}, state["optimizer"]], log / "checkpoint_4.pth")
    shutil.copy(run_dir / "logs" / "t" / "checkpoint_4.pth", log / "checkpoint_40.pth")
    table = compare_checkpoints(runner_for(run_dir, config, log), tmp_path / "out", seed=3, max_images=40,
                                metrics={40: {"fid": 123.0}}, progress=False)
    a, b = table["rows"]
    assert (a["step"], b["step"]) == (4, 40)
    assert a["mean"] == b["mean"] and a["per_level"] == b["per_level"]
    assert (a["fid"], b["fid"]) == (None, 123.0)
    assert table["settings"]["n_images"] == 40
    header = (tmp_path / "out" / "comparison.csv").read_text().splitlines()[0]
    assert header.startswith("step,checkpoint,mean,stderr,fid,level_0")


def test_ssm_objective_on_the_same_run(run, tmp_path):
    run_dir, config = run
    table = compare_checkpoints(runner_for(run_dir, config), tmp_path / "out", max_images=24, objective="ssm",
                                checkpoints=["checkpoint_6.pth"], progress=False)
    (row,) = table["rows"]
    assert row["step"] == 6 and len(row["per_level"]) == 4
    assert all(torch.isfinite(torch.tensor(row["per_level"])))
    assert table["settings"]["algo"] == "ssm" and table["settings"]["weight"] == "sigma^2"


def test_baseline_and_scorenet_checkpoints(tmp_path):
    """The single-level runners: one column, their own objective (a fresh network saved as a checkpoint)."""
    cfg = config_from_dict(tiny_digits_config(model={"sigma": 0.1, "nef": 8, "ndf": 8},
                                              training={"algo": "ssm", "noise_std": 0.0}))
    for cls in (BaselineRunner, ScoreNetRunner):
        log = tmp_path / cls.__name__
        log.mkdir()
        torch.manual_seed(0)
        torch.save({"model": cls.build_model(cfg).state_dict(), "step": 9}, log / "checkpoint.pth")
        table = compare_checkpoints(runner_for(tmp_path, cfg, log, cls), tmp_path / f"out_{cls.__name__}",
                                    max_images=16, progress=False)
        (row,) = table["rows"]
        assert row["step"] == 9 and len(row["per_level"]) == 1 and row["mean"] == row["per_level"][0]
        assert table["settings"]["algo"] == ("dsm" if cls is BaselineRunner else "ssm")


def test_no_checkpoint_or_an_unreadable_one_is_one_clear_error(run, tmp_path):
    run_dir, config = run
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no checkpoint_<step>.pth or checkpoint.pth in"):
        compare_checkpoints(runner_for(run_dir, config, empty), tmp_path / "out")
    log = tmp_path / "logs"
    log.mkdir()
    shutil.copy(run_dir / "logs" / "t" / "checkpoint_2.pth", log / "checkpoint_2.pth")
    (log / "checkpoint_8.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"model comparison stopped, nothing evaluated: cannot read checkpoint "
                                        r".*checkpoint_8\.pth"):
        compare_checkpoints(runner_for(run_dir, config, log), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="no checkpoint at"):
        find_checkpoints(log, ["checkpoint_5.pth"])
    assert find_checkpoints(log, ["checkpoint_2.pth"]) == [(2, log / "checkpoint_2.pth")]
