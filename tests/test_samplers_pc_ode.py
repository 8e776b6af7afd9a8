"""The predictor-corrector and probability-flow ODE samplers against analytic Gaussians: moments, NFE counts, the
score between levels, inpainting, and the one-signature contract."""
import math

import pytest
import torch

from sampling import SAMPLERS, geometric_sigmas, inpainting, interpolated_score, ode_sampler, pc_sampler
from sampling.pc import pc_updates

MU, S = 3.0, 0.5


def gaussian_score(sigmas):
    """The exact score of N(MU, S^2 I) perturbed by N(0, sigma_label^2 I)."""
    def score(x, labels):
        var = S ** 2 + sigmas[labels].to(x.dtype).view(-1, *[1] * (x.ndim - 1)) ** 2
        return -(x - MU) / var
    return score


def prior_draw(n, d, sigma_max):
    """A draw of the exactly perturbed distribution at sigma_1 (so that only the sampler is tested)."""
    return MU + math.sqrt(S ** 2 + sigma_max ** 2) * torch.randn(n, d)


@pytest.mark.parametrize("predictor, corrector, n_steps_each, snr", [
    ("reverse_diffusion", "langevin", 1, 0.16), ("none", "langevin", 20, 0.1), ("reverse_diffusion", "none", 1, 0.16)])
def test_pc_reaches_gaussian(predictor, corrector, n_steps_each, snr):
    """Image-like dimension (256: the per-example norms of the snr rule concentrate); 20 levels 1 -> 0.1.  The
    final state is a draw of the sigma_L-perturbed Gaussian, variance S^2 + sigma_L^2.  Tolerances: the mean to
    0.02, the variance to 5% (reverse diffusion on 20 levels is ~4% high; Langevin at snr 0.1 is ~2.5% high)."""
    torch.manual_seed(0)
    sigmas = geometric_sigmas(1.0, 0.1, 20, dtype=torch.float64)
    x = pc_sampler(gaussian_score(sigmas), prior_draw(500, 256, 1.0), sigmas, predictor=predictor,
                   corrector=corrector, n_steps_each=n_steps_each, snr=snr)
    assert x.mean().item() == pytest.approx(MU, abs=0.02)
    assert x.var().item() == pytest.approx(S ** 2 + 0.1 ** 2, rel=0.05)


def test_pc_reverse_diffusion_step_and_denoise_pinned():
    """One level, predictor only: x_mean = x + sigma^2 s (sigma after the last level is 0); x = x_mean + sigma z;
    ``denoise`` returns x_mean."""
    x0, sigmas = torch.rand(3, 4), torch.tensor([0.5])
    torch.manual_seed(1)
    out = pc_sampler(lambda x, lab: -x, x0, sigmas, corrector="none")
    torch.manual_seed(1)
    torch.testing.assert_close(out, x0 - 0.25 * x0 + 0.5 * torch.randn(3, 4))
    torch.testing.assert_close(pc_sampler(lambda x, lab: -x, x0, sigmas, corrector="none", denoise=True), 0.75 * x0)


def test_pc_langevin_step_is_the_snr_rule():
    """Corrector only, one step: eps = 2 (snr ||z|| / ||s||)^2 per example."""
    x0 = torch.rand(3, 5) + 1
    torch.manual_seed(2)
    out = pc_sampler(lambda x, lab: -x, x0, [1.0], predictor="none", n_steps_each=1, snr=0.2)
    torch.manual_seed(2)
    z = torch.randn(3, 5)
    eps = (2 * (0.2 * z.norm(dim=1) / x0.norm(dim=1)) ** 2).view(-1, 1)
    torch.testing.assert_close(out, x0 - eps * x0 + (2 * eps).sqrt() * z)


@pytest.mark.parametrize("predictor, corrector", [("none", "langevin"), ("reverse_diffusion", "langevin"),
                                                  ("reverse_diffusion", "none")])
def test_pc_nfe_and_callbacks(predictor, corrector):
    calls, infos = [0], []

    def score(x, labels):
        calls[0] += 1
        return -x
    pc_sampler(score, torch.rand(2, 3), [1.0, 0.5, 0.1], predictor=predictor, corrector=corrector, n_steps_each=4,
               callback=infos.append)
    expected = pc_updates(3, predictor, corrector, 4)
    assert calls[0] == expected == len(infos) == infos[-1]["nfe"]
    assert expected == 3 * ((predictor != "none") + 4 * (corrector != "none"))       # corrector only: 12
    assert [i["i"] for i in infos] == list(range(expected)) and infos[-1]["level"] == 2


def test_ode_reaches_gaussian_and_reports_nfe():
    """dopri5 at rtol = atol = 1e-3 from the exact sigma_1 marginal: mean to 0.02, variance to 5% (measured: within
    1%); NFE counted by the sampler equals the network calls and is small for a linear drift (measured: 20)."""
    torch.manual_seed(3)
    sigmas = geometric_sigmas(1.0, 0.1, 10, dtype=torch.float64)
    calls, infos = [0], []
    score = gaussian_score(sigmas)

    def counted(x, labels):
        calls[0] += 1
        return score(x, labels)
    x = ode_sampler(counted, prior_draw(5000, 4, 1.0), sigmas, callback=infos.append)
    assert x.mean().item() == pytest.approx(MU, abs=0.02)
    assert x.var().item() == pytest.approx(S ** 2 + 0.1 ** 2, rel=0.05)
    assert [i["level"] for i in infos] == list(range(1, 10))
    assert infos[-1]["nfe"] == calls[0] and 6 <= calls[0] <= 100
    euler = []
    ode_sampler(score, prior_draw(10, 4, 1.0), sigmas, method="euler", callback=euler.append)
    assert euler[-1]["nfe"] == 9                                        # fixed steps: one per level interval


def test_ode_is_deterministic_and_denoise_counts():
    sigmas = geometric_sigmas(1.0, 0.1, 5, dtype=torch.float64)
    x0 = prior_draw(8, 3, 1.0)
    a, infos = ode_sampler(gaussian_score(sigmas), x0, sigmas), []
    b = ode_sampler(gaussian_score(sigmas), x0, sigmas, denoise=True, callback=infos.append)
    torch.testing.assert_close(b, a + 0.01 * gaussian_score(sigmas)(a, torch.full((8,), 4)))
    assert infos[-1]["level"] is None and infos[-1]["nfe"] == infos[-2]["nfe"] + 1


def test_interpolated_score_between_levels():
    """Exact at the levels (one call of B examples); in between, sigma * s is linear in log sigma between the two
    neighbours' values (one call of 2B); outside [sigma_L, sigma_1] clamped."""
    sigmas = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    sizes = []

    def score(x, labels):                 # sigma_label * s = label + 1 (a value that tells the levels apart)
        sizes.append(len(x))
        return (labels.to(x.dtype) + 1).view(-1, 1) / sigmas[labels].to(x.dtype).view(-1, 1) * torch.ones_like(x)
    at = interpolated_score(score, sigmas)
    x = torch.zeros(3, 2, dtype=torch.float64)
    torch.testing.assert_close(at(x, 2.0) * 2.0, torch.full((3, 2), 2.0, dtype=torch.float64))
    assert sizes == [3]
    mid = math.sqrt(2.0)                                  # halfway between 2 and 1 in log sigma
    torch.testing.assert_close(at(x, mid) * mid, torch.full((3, 2), 2.5, dtype=torch.float64))
    quarter = 2.0 * 2 ** 0.25                             # a quarter of the way from 2 to 4
    torch.testing.assert_close(at(x, quarter) * quarter, torch.full((3, 2), 1.75, dtype=torch.float64))
    assert sizes == [3, 6, 6]
    torch.testing.assert_close(at(x, 100.0) * 4.0, torch.full((3, 2), 1.0, dtype=torch.float64))   # clamped


@pytest.mark.parametrize("name, kwargs", [("pc", {}), ("ode", {}), ("heun", {"s_churn": 5.0}), ("dpmpp_2m", {}),
                                          ("euler_ancestral", {})])
@pytest.mark.parametrize("denoise", [False, True])
def test_inpainting_with_new_samplers(name, kwargs, denoise):
    """inpainting() unchanged: observed pixels are the reference (+ sigma_L noise without the final denoise)."""
    torch.manual_seed(4)
    ref = torch.rand(4, 1, 4, 4)
    mask = torch.zeros_like(ref)
    mask[..., :2] = 1
    sigmas = geometric_sigmas(1.0, 0.01, 4, dtype=torch.float64)
    out = inpainting(SAMPLERS[name], mask, ref)(lambda x, lab: -(x - 0.5), 0.5 + torch.randn(4, 1, 4, 4), sigmas,
                                                denoise=denoise, **kwargs)
    if denoise:
        assert torch.equal(out[..., :2], ref[..., :2])
    else:
        assert (out[..., :2] - ref[..., :2]).abs().max() < 0.06              # 6 sigma_L
    assert (out[..., 2:] - ref[..., 2:]).abs().max() > 0.1                  # the rest is sampled


def test_samplers_share_one_signature():
    """Every sampler of SAMPLERS takes (score_fn, x, sigmas, *, denoise, callback, project) and returns x."""
    sigmas = torch.tensor([1.0, 0.1], dtype=torch.float64)
    for name, sampler in SAMPLERS.items():
        infos = []
        out = sampler(lambda x, lab: -x, torch.rand(2, 3), sigmas, denoise=False, callback=infos.append,
                      project=lambda x, level, sigma: x)
        assert out.shape == (2, 3) and infos and set(infos[0]) >= {"i", "x", "level", "sigma"}, name
