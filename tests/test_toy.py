"""ToyRunner (paper Figures 2 and 3): exact toy densities and scores, the mode metrics, the annealing claim with the
exact score, the official paper-form sampler settings, and end-to-end runs of ``main.py --runner ToyRunner``."""
import json
import math

import pytest
import torch
from conftest import run_main
from PIL import Image

from commands.context import RunContext
from configs import config_from_dict, load_config, resolve_config_path
from datasets import FreshSamples
from datasets.toy import GaussianMixture, ring, two_gaussians
from errors import ConfigError
from evaluation.toy_metrics import mmd2, mode_metrics
from models import ToyNCSN
from runners.toy_runner import METHODS, ToyRunner


def make_runner(**toy):
    cfg = config_from_dict({"toy": toy})
    return ToyRunner(RunContext.of_run("run", "toy", "ToyRunner", seed=0), cfg, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------- distributions

def test_official_mixture_and_ring():
    d = two_gaussians()
    assert d.means.tolist() == [[5.0, 5.0], [-5.0, -5.0]] and d.weights.tolist() == pytest.approx([0.8, 0.2])
    x = d.sample(20000, generator=torch.Generator().manual_seed(0))
    k = d.nearest_mode(x)
    assert (k == 0).double().mean().item() == pytest.approx(0.8, abs=0.01)
    first = x[k == 0]
    torch.testing.assert_close(first.mean(0), torch.tensor([5.0, 5.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(first.std(0), torch.tensor([1.0, 1.0]), atol=0.03, rtol=0)

    r = ring(8, 5.0, 0.5)
    assert r.n_modes == 8 and r.weights.tolist() == pytest.approx([1 / 8] * 8)
    torch.testing.assert_close(r.means.norm(dim=1), torch.full((8,), 5.0, dtype=torch.float64))
    angles = torch.atan2(r.means[:, 1], r.means[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles, torch.arange(8, dtype=torch.float64) * math.pi / 4)


@pytest.mark.parametrize("dist", [two_gaussians(), ring()], ids=["2gauss", "ring"])
def test_perturbed_density_is_the_convolution(dist):
    """p_sigma integrates to 1 and has second moment E||x||^2 + 2 sigma^2: components of std sqrt(std^2 + sigma^2)
    (the official GMMDistAnneal used std sigma, which is not the perturbed density)."""
    xs = torch.linspace(-45, 45, 901, dtype=torch.float64)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    cell = (xs[1] - xs[0]).item() ** 2
    second_moment = (dist.weights * dist.means.pow(2).sum(1)).sum().item() + 2 * dist.std ** 2
    for sigma in (0.0, 1.0, 3.0):
        p = dist.log_prob(pts, sigma).exp()
        assert (p.sum() * cell).item() == pytest.approx(1.0, abs=1e-6)
        assert ((p * pts.pow(2).sum(1)).sum() * cell).item() == pytest.approx(second_moment + 2 * sigma ** 2, rel=1e-5)


@pytest.mark.parametrize("dist", [two_gaussians(), ring()], ids=["2gauss", "ring"])
def test_score_is_the_gradient_of_log_prob(dist):
    x = (torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 12
    for sigma in (0.0, 0.5, 7.0, torch.rand(200, dtype=torch.float64) * 5):   # one level, or one per row
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(dist.log_prob(xr, sigma).sum(), xr)
        torch.testing.assert_close(dist.score(x, sigma), grad)
    assert dist.score(x.float()).dtype == torch.float32


def test_official_gmmdistanneal_quirk():
    """The official GMMDistAnneal.score(x, sigma) used components of std sigma: that is the true perturbed score at
    noise level sqrt(sigma^2 - 1), i.e. the data score at sigma = 1 and a level 1/(2 sigma) smaller at large sigma."""
    d = two_gaussians()
    x = torch.randn(100, 2, dtype=torch.float64) * 6
    for sigma in (1.0, 1.5, 20.0):
        official = GaussianMixture(d.means, d.weights, sigma).score(x)
        torch.testing.assert_close(official, d.score(x, math.sqrt(sigma ** 2 - 1)))
    assert not torch.allclose(GaussianMixture(d.means, d.weights, 1.0).score(x), d.score(x, 1.0))


def test_mode_metrics_and_mmd():
    d = two_gaussians()
    x = torch.tensor([[5.0, 5.0], [4.0, 6.0], [1.0, 0.5], [-5.0, -4.0]])   # 3 nearest (5,5), 1 nearest (-5,-5)
    m = mode_metrics(d, x)
    assert m["mode_weights"] == [0.75, 0.25] and m["weight_tv"] == pytest.approx(0.05)
    assert m["modes_covered"] == 2 and m["n_modes"] == 2 and "mmd2" not in m
    assert mode_metrics(d, torch.tensor([[5.0, 5.0]] * 10))["modes_covered"] == 1
    g = torch.Generator().manual_seed(2)
    a, b = d.sample(800, generator=g), d.sample(800, generator=g)
    assert abs(mmd2(a, b)) < 0.01
    assert mmd2(a, b + torch.tensor([1.0, 0.0])) > 0.1
    assert mmd2(a, ring().sample(800, generator=g)) > 0.5


def test_fresh_samples_stream_resumes():
    s = FreshSamples(two_gaussians(), 16, seed=3)
    next(s)
    state = s.state_dict()
    b1, _ = next(s)
    s.load_state_dict(state)
    b2, _ = next(s)
    assert torch.equal(b1, b2) and b1.shape == (16, 2) and s.epoch == 0


def test_ncsn_is_noise_conditional():
    sigmas = torch.tensor([10.0, 1.0])
    net = ToyNCSN(sigmas, hidden=8)
    assert "sigmas" not in net.state_dict()                 # saved as the checkpoint's 'sigmas', not as weights
    x = torch.randn(5, 2)
    lab0, lab1 = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    with torch.no_grad():
        # zero embeddings (the initial state): one f at both levels, fed x / sqrt(1 + sigma^2), output f / sigma
        torch.testing.assert_close(net(x * math.sqrt(101) / math.sqrt(2), lab0) * 10, net(x, lab1))
        before0, before1 = net(x, lab0), net(x, lab1)
        net.embed1.weight[0] += 1.0                          # the level embedding changes only its own level
        assert not torch.allclose(net(x, lab0), before0) and torch.equal(net(x, lab1), before1)


# ---------------------------------------------------------------------------------------- sampling (Figure 3)

def test_toy_yml_has_the_official_settings():
    cfg = load_config(resolve_config_path("toy.yml"))
    t = cfg.toy
    assert (t.dataset, t.n_samples, t.bound, t.langevin_lr, t.langevin_steps) == ("2gauss", 1280, 8.0, 0.1, 1000)
    assert (t.sigma_begin, t.sigma_end, t.num_sigmas, t.n_steps_each, t.hidden) == (20.0, 1.0, 10, 100, 128)
    assert (cfg.training.n_iters, cfg.training.batch_size, cfg.optim.lr, cfg.optim.optimizer) == \
        (10000, 128, 0.001, "Adam")
    with pytest.raises(ConfigError, match="toy.dataset"):
        config_from_dict({"toy": {"dataset": "moons"}})
    with pytest.raises(ConfigError, match="toy.seed"):
        config_from_dict({"toy": {"seed": -1}})


def test_runner_chains_are_the_official_paper_form():
    """The runner's samplers reproduce the official toy loops step for step: x += lr/2 s + sqrt(lr) z (Langevin, lr
    0.1) and lr_i = lr sigma_i^2 / sigma_L^2 (annealed), from U[-8, 8]^2, with the same random draws."""
    r = make_runner(n_samples=6, langevin_steps=4, n_steps_each=3, num_sigmas=3)
    d, sigmas = r.dist, r.sigmas.tolist()
    exact = lambda x, labels: d.score(x, r.sigmas[labels[0]])        # noqa: E731
    torch.manual_seed(11)
    out = r.sample_all(d.score, exact)

    torch.manual_seed(11)
    x0 = torch.rand(6, 2) * 16 - 8
    torch.testing.assert_close(out["iid"], d.sample(6))
    x = x0
    for _ in range(4):                                               # official ToyRunner.langevin_dynamics
        x = x + 0.1 / 2 * d.score(x)
        x = x + torch.randn_like(x) * math.sqrt(0.1)
    torch.testing.assert_close(out["langevin"], x)
    x = x0
    for sigma in sigmas:                                             # official ToyRunner.anneal_langevin_dynamics
        lr = 0.1 * (sigma / sigmas[-1]) ** 2
        for _ in range(3):
            x = x + lr / 2 * d.score(x, sigma)
            x = x + torch.randn_like(x) * math.sqrt(lr)
    torch.testing.assert_close(out["annealed_langevin"], x)
    assert sigmas == pytest.approx([20.0, math.sqrt(20.0), 1.0])


def test_annealing_recovers_the_mode_weights():
    """Paper Sec. 3.2.2 / Fig. 3 with the exact score and the official settings: from U[-8, 8]^2 plain Langevin keeps
    the ~1/2-1/2 split of the start (the basins are split by x + y = 0); annealed Langevin recovers 0.8 / 0.2."""
    r = make_runner(seed=0)                                  # toy defaults = the official settings, 1280 samples
    d = r.dist
    with r.threads():
        torch.manual_seed(0)
        out = r.sample_all(d.score, lambda x, labels: d.score(x, r.sigmas[labels[0]]))
    m = {k: mode_metrics(d, v) for k, v in out.items()}
    assert m["iid"]["weight_tv"] < 0.03
    assert m["langevin"]["mode_weights"][0] == pytest.approx(0.5, abs=0.1) and m["langevin"]["weight_tv"] > 0.2
    assert m["annealed_langevin"]["mode_weights"][0] == pytest.approx(0.8, abs=0.05)
    assert m["annealed_langevin"]["weight_tv"] < m["langevin"]["weight_tv"] / 4


def test_ring_annealed_covers_all_modes():
    r = make_runner(dataset="ring", n_samples=400, langevin_steps=200, n_steps_each=30, seed=0)
    d = r.dist
    with r.threads():
        torch.manual_seed(0)
        out = r.sample_all(d.score, lambda x, labels: d.score(x, r.sigmas[labels[0]]))
    for name in ("iid", "langevin", "annealed_langevin"):
        m = mode_metrics(d, out[name])
        assert m["modes_covered"] == 8 and m["weight_tv"] < 0.12, (name, m)


# ------------------------------------------------------------------------------------------------- end to end

def tiny_toy_config():
    return {"training": {"n_iters": 300, "batch_size": 128, "snapshot_freq": 300, "keep_snapshots": False,
                         "test_freq": 100, "log_freq": 100},
            "optim": {"lr": 0.001},
            "toy": {"dataset": "2gauss", "seed": 0, "hidden": 32, "n_samples": 400, "langevin_steps": 300,
                    "n_steps_each": 100, "num_sigmas": 6}}


def check_figures(folder, num_sigmas, names=("figure3.png",)):
    for name in names:
        with Image.open(folder / name) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 200
    with Image.open(folder / "score_field.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == num_sigmas     # one frame per noise level


def test_main_toy_runner_end_to_end(tmp_path, write_config):
    """Train (a few hundred steps), figures, GIF and metrics.json headless; then --test into -o."""
    cfg_path = write_config(tiny_toy_config())
    res = run_main(["--runner", "ToyRunner", "--config", str(cfg_path), "--doc", "toy"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    log = tmp_path / "run" / "logs" / "toy"
    check_figures(log / "figures", 6, names=("figure2.png", "figure3.png"))
    assert (log / "score_model" / "checkpoint.pth").is_file() and (log / "ncsn" / "checkpoint.pth").is_file()

    metrics = json.loads((log / "metrics.json").read_text())
    assert set(metrics) == set(METHODS)
    for m in metrics.values():
        assert len(m["mode_weights"]) == 2 and sum(m["mode_weights"]) == pytest.approx(1.0, abs=1e-3)
        assert m["n_samples"] == 400 and math.isfinite(m["mmd2"])
    assert metrics["iid"]["modes_covered"] == 2 and metrics["iid"]["weight_tv"] < 0.08
    assert metrics["iid"]["mmd2"] < 0.02 < metrics["annealed_langevin"]["mmd2"]        # p_{sigma_L} is blurred
    assert metrics["annealed_langevin"]["mmd2_to_perturbed"] < metrics["annealed_langevin"]["mmd2"]
    errors = json.loads((log / "score_error.json").read_text())["score_model"]
    # Figure 2: even a short SSM fit is accurate where the data is and poor where it is not
    assert errors["mean_error_top10pct_density"] * 3 < errors["mean_error_bottom50pct_density"]
    assert metrics["langevin"]["weight_tv"] > 0.15 > 0.08 > metrics["annealed_langevin"]["weight_tv"]

    # --test reruns the sampling part from the saved models into -o, with the same chains
    res = run_main(["--runner", "ToyRunner", "--doc", "toy", "--test", "-o", "out"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    check_figures(tmp_path / "out", 6)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_level_score_takes_one_level_per_example():
    """The exact noise-conditional score: each example at its own level (the ODE sampler's interpolated score batches
    two levels), equal to the score of p_sigma at that level."""
    d, sigmas = two_gaussians(), torch.tensor([20.0, 5.0, 1.0])
    x, labels = torch.randn(6, 2) * 4, torch.tensor([0, 1, 2, 2, 1, 0])
    got = d.level_score(sigmas)(x, labels)
    want = torch.stack([d.score(x[i:i + 1], float(sigmas[labels[i]]))[0] for i in range(6)])
    assert torch.allclose(got, want, rtol=1e-6, atol=0)
    assert not torch.allclose(got, d.score(x, float(sigmas[0])))                # the levels do matter
