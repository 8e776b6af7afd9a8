"""The Karras-schedule samplers (heun, dpmpp_2m, euler_ancestral) against analytic Gaussians: the convergence order
each claims with the exact denoiser, the moments they reach through the NCSN's interpolated score, the network
evaluations they count against the budget, inpainting and the config checks."""
import json
import math

import numpy as np
import pytest
import torch
from test_samplers_pc_ode import MU, S, gaussian_score, prior_draw

from configs import config_from_dict
from errors import ConfigError, UserError
from sampling import SAMPLERS, geometric_sigmas
from sampling.karras import (
    KARRAS_METHODS,
    dpmpp_2m_steps,
    euler_ancestral_steps,
    evaluation_sigmas,
    fewest_evaluations,
    heun_steps,
    karras_sigmas,
    plan,
    planned_run,
)
from sampling.ode import network_passes

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run with the stand-in Inception
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
SMAX, SMIN = 10.0, 0.01


def exact_denoiser(x, sigma):
    """D(x, sigma) = E[x_0 | x] for data N(MU, S^2) perturbed by N(0, sigma^2)."""
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def exact_flow(x, sigma):
    """The probability-flow ODE's exact map from SMAX to ``sigma`` (each coordinate keeps its standardised value)."""
    return MU + (x - MU) * math.sqrt((S ** 2 + sigma ** 2) / (S ** 2 + SMAX ** 2))


def test_karras_schedule_is_edm_rho_7():
    s = karras_sigmas(SMAX, SMIN, 5)
    assert s[0] == SMAX and s[-1] == SMIN and len(s) == 5
    roots = [v ** (1 / 7) for v in s]
    steps = [b - a for a, b in zip(roots, roots[1:])]
    assert max(steps) - min(steps) < 1e-12                   # evenly spaced in sigma^(1/7)
    with pytest.raises(ValueError):
        karras_sigmas(SMAX, SMIN, 1)


@pytest.mark.parametrize("steps_fn", [heun_steps, dpmpp_2m_steps])
def test_deterministic_samplers_are_second_order(steps_fn):
    """With the exact denoiser, the error against the ODE's exact solution falls 4x per doubling of the steps
    (order 2; measured 2.06-2.17 between 20, 40 and 80 points)."""
    torch.manual_seed(0)
    x0 = MU + SMAX * torch.randn(2000, dtype=torch.float64)
    target = exact_flow(x0, SMIN)
    errors = [(steps_fn(exact_denoiser, x0.clone(), karras_sigmas(SMAX, SMIN, n)) - target).abs().max().item()
              for n in (20, 40, 80)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.8 < o < 2.5 for o in orders), (errors, orders)
    assert errors[-1] < 3e-3


def test_euler_ancestral_reaches_the_gaussian_at_first_order():
    """Stochastic: the variance at sigma_L approaches S^2 + sigma_L^2, its error falling about 3x per 4x steps
    (weak order about 1; 0.126 -> 0.042 -> 0.013 measured); the mean is right at every step count."""
    torch.manual_seed(1)
    errors = []
    for n in (10, 40, 160):
        y = euler_ancestral_steps(exact_denoiser, MU + SMAX * torch.randn(100000, dtype=torch.float64),
                                  karras_sigmas(SMAX, SMIN, n))
        assert y.mean().item() == pytest.approx(MU, abs=0.01)
        errors.append(abs(y.var().item() - (S ** 2 + SMIN ** 2)))
    assert errors[0] / errors[1] > 2.4 and errors[1] / errors[2] > 2.4 and errors[2] < 0.02, errors


@pytest.mark.parametrize("method", KARRAS_METHODS)
@pytest.mark.parametrize("denoise", [False, True])
def test_each_reaches_the_gaussian_through_the_interpolated_score(method, denoise):
    """Through the one sampler signature: the exact score at 30 trained levels 10 -> 0.01 (the network's view),
    interpolated between them; 100 network evaluations (400 for the first-order euler_ancestral, 13 % low in
    variance at 100).  The final state has the data's mean and the variance of the sigma_L-perturbed Gaussian (S^2
    without noise after the final denoising step: Tweedie's estimate shrinks it by S^2 / (S^2 + sigma_L^2),
    negligible here)."""
    torch.manual_seed(2)
    sigmas = geometric_sigmas(SMAX, SMIN, 30, dtype=torch.float64)
    x = SAMPLERS[method](gaussian_score(sigmas), prior_draw(4000, 64, SMAX).double(), sigmas,
                         nfe=400 if method == "euler_ancestral" else 100, denoise=denoise)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.var().item() == pytest.approx(S ** 2 + (0 if denoise else SMIN ** 2), rel=0.03)


@pytest.mark.parametrize("method", KARRAS_METHODS)
@pytest.mark.parametrize("denoise", [False, True])
@pytest.mark.parametrize("nfe", [3, 10, 35])
def test_network_evaluations_are_counted_exactly_within_the_budget(method, denoise, nfe):
    """The network's examples over the batch size equal the count the callback reports and the plan predicts, never
    more than the budget; the next longer schedule would exceed it."""
    sigmas = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64)
    batch, seen, infos = 3, [0], []

    def score(x, labels):
        seen[0] += x.shape[0]
        return -(x - 0.5)
    if nfe < fewest_evaluations(method, denoise):
        with pytest.raises(UserError, match="sampling.nfe"):
            SAMPLERS[method](score, torch.rand(batch, 2), sigmas, nfe=nfe, denoise=denoise)
        return
    SAMPLERS[method](score, torch.rand(batch, 2), sigmas, nfe=nfe, denoise=denoise, callback=infos.append)
    steps, planned = planned_run(method, sigmas, nfe, denoise=denoise)
    assert seen[0] / batch == infos[-1]["nfe"] == planned <= nfe and len(infos) == steps
    longer = karras_sigmas(1.0, 0.01, steps + 2) + ([0.0] if denoise else [])
    passes = network_passes(sigmas.tolist())
    assert sum(passes(s) for s in evaluation_sigmas(method, longer)) > nfe
    assert infos[-1]["sigma"] == (0.0 if denoise else pytest.approx(0.01))


def test_heun_costs_two_evaluations_a_step_and_four_between_levels():
    """Its schedule's ends are trained levels (one network pass each), its inner points lie between levels (two)."""
    sigmas = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64).tolist()
    schedule = plan("heun", sigmas, 14)
    assert len(schedule) == 5                                   # 4 steps: 1 + 2 + 2 + 2 + 2 + 2 + 2 + 1 = 14
    assert evaluation_sigmas("heun", schedule) == [schedule[0], schedule[1], schedule[1], schedule[2], schedule[2],
                                                   schedule[3], schedule[3], schedule[4]]


def test_heun_churn_is_stochastic_and_still_reaches_the_gaussian():
    """Churn adds noise that the following step must remove, so it needs more steps than the deterministic sampler:
    s_churn 10 is 7 % high in variance at 100 network evaluations and within 1 % at 400 (measured)."""
    torch.manual_seed(3)
    sigmas = geometric_sigmas(SMAX, SMIN, 30, dtype=torch.float64)
    x0 = prior_draw(4000, 64, SMAX).double()
    a = SAMPLERS["heun"](gaussian_score(sigmas), x0, sigmas, nfe=400, s_churn=10.0)
    b = SAMPLERS["heun"](gaussian_score(sigmas), x0, sigmas, nfe=400, s_churn=10.0)
    assert not torch.equal(a, b)
    assert a.mean().item() == pytest.approx(MU, abs=0.01)
    assert a.var().item() == pytest.approx(S ** 2 + SMIN ** 2, rel=0.03)
    churned = evaluation_sigmas("heun", karras_sigmas(SMAX, SMIN, 6), s_churn=10.0)
    assert churned[0] == SMAX and churned[2] == pytest.approx(karras_sigmas(SMAX, SMIN, 6)[1] * math.sqrt(2))


@pytest.mark.parametrize("sampling, key", [
    ({"method": "dpmpp_2m", "s_churn": 1.0}, "sampling.s_churn"),
    ({"method": "heun", "nfe": 2, "denoise": True}, "sampling.nfe"),
    ({"method": "euler_ancestral", "nfe": 0}, "sampling.nfe"),
    ({"method": "heun", "s_churn": -1.0}, "sampling.s_churn")])
def test_config_refuses_what_the_samplers_cannot_do(sampling, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"sampling": sampling})
    assert e.value.key == key and key in str(e.value)


@pytest.mark.parametrize("method", KARRAS_METHODS)
def test_eval_test_and_inpainting_run_with_each_and_record_the_evaluations(method, tiny_run, tmp_path, capfd):
    """--eval records the exact network evaluations per sample in metrics.json (the plan of 9 on the tiny run's 10
    levels); --test with inpainting keeps the observed pixels of the test digits."""
    import yaml
    from conftest import main_in_process
    from test_eval_cli import evaluate
    overlay = tmp_path / "s.yml"
    overlay.write_text(yaml.safe_dump({"sampling": {"method": method, "nfe": 9, "denoise": True}}))
    assert evaluate(tiny_run, tmp_path / "ev", "--config", str(overlay)) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    sigmas = metrics["sampling"]["sigmas"]
    assert metrics["sampling"]["method"] == method and metrics["sampling"]["nfe"] == 9
    assert metrics["sampling"]["nfe_per_sample"] == planned_run(method, sigmas, 9, denoise=True)[1] <= 9
    assert np.isfinite(metrics["fid"])
    paint = tmp_path / "p.yml"
    paint.write_text(yaml.safe_dump({"sampling": {"method": method, "nfe": 9, "denoise": True, "inpainting": True,
                                                  "n_samples": 4}}))
    rc, err = main_in_process(capfd, "--test", "--doc", "e", "--run", tiny_run / "run", "-o", tmp_path / "t",
                              "--config", paint)
    assert rc == 0, err
    report = json.loads((tmp_path / "t" / "inpainting.json").read_text())
    assert report["mask"] == "left_half" and report["hidden_values"] == 32 and report["mse"] > 0
    completions = torch.load(tmp_path / "t" / "inpainting.pth", weights_only=True).view(2, 2, 1, 8, 8)
    # the two completions of a test digit: the digit itself where observed (the left half), sampled elsewhere
    assert torch.equal(completions[:, 0, ..., :4], completions[:, 1, ..., :4])
    assert not torch.equal(completions[:, 0, ..., 4:], completions[:, 1, ..., 4:])
