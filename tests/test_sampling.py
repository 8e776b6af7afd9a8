"""Samplers and noise schedules against analytic Gaussians."""
import math

import pytest
import torch

from sampling import anneal_langevin_dynamics, geometric_sigmas, inpainting, unconditional


def test_geometric_sigmas_official_values():
    s = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64)
    official = [1.0, 0.599484, 0.359381, 0.215443, 0.129155, 0.077426, 0.046416, 0.027826, 0.016681, 0.01]
    assert s.tolist() == pytest.approx(official, rel=2e-5)                 # the values printed in the spec
    np = pytest.importorskip("numpy")
    exact = np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))            # the official expression
    assert s.tolist() == pytest.approx(exact.tolist(), rel=1e-14)
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))
    assert geometric_sigmas(20, 1, 10).dtype == torch.float32 and s[0] > s[-1]


def test_step_size_convention_pinned():
    """One step is x + a*s + sqrt(2a)*z with a = step_lr*(sigma_i/sigma_L)^2 (the official code; paper eps = 2a)."""
    sigmas = torch.tensor([4.0, 2.0])
    x0 = torch.zeros(3, 2)
    seen = []
    torch.manual_seed(0)
    out = anneal_langevin_dynamics(lambda x, lab: torch.ones_like(x), x0, sigmas, n_steps_each=1, step_lr=0.01,
                                   callback=lambda info: seen.append(info["x"].clone()))
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, 2), torch.randn(3, 2)
    a1, a2 = 0.01 * 4, 0.01
    expected1 = a1 + math.sqrt(2 * a1) * z1
    torch.testing.assert_close(seen[0], expected1)
    torch.testing.assert_close(out, expected1 + a2 + math.sqrt(2 * a2) * z2)
    assert len(seen) == 2


def test_labels_follow_levels():
    got = []

    def score(x, labels):
        got.append(labels.tolist())
        return torch.zeros_like(x)
    anneal_langevin_dynamics(score, torch.zeros(2, 1), torch.tensor([3., 2., 1.]), n_steps_each=2, step_lr=1e-3)
    assert got == [[0, 0], [0, 0], [1, 1], [1, 1], [2, 2], [2, 2]]


def test_langevin_reaches_gaussian():
    """Plain Langevin with the exact score of N(mu, s^2) reaches its mean and variance."""
    torch.manual_seed(1)
    mu, s = torch.tensor([1.0, -2.0]), 0.5
    x = anneal_langevin_dynamics(unconditional(lambda x: -(x - mu) / s ** 2), torch.rand(20000, 2), [s],
                                 n_steps_each=300, step_lr=0.01)
    torch.testing.assert_close(x.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), s ** 2), atol=0.02, rtol=0)


def test_annealed_langevin_reaches_gaussian():
    """Annealed Langevin with the exact perturbed scores of N(mu, s^2 I) ends at mu and s^2 (+ sigma_L^2)."""
    torch.manual_seed(2)
    mu, s = 3.0, 0.5
    sigmas = geometric_sigmas(1.0, 0.1, 4)

    def score(x, labels):
        var = s ** 2 + sigmas[labels].view(-1, 1) ** 2
        return -(x - mu) / var
    x = anneal_langevin_dynamics(score, torch.rand(20000, 1), sigmas, n_steps_each=200, step_lr=0.01)
    assert x.mean().item() == pytest.approx(mu, abs=0.02)
    assert x.var().item() == pytest.approx(s ** 2 + 0.1 ** 2, rel=0.05)


def test_callback_count_and_denoise_and_shape():
    calls = []
    x0 = torch.rand(4, 1, 3, 3)
    sigmas = torch.tensor([1.0, 0.5, 0.1])
    out = anneal_langevin_dynamics(lambda x, lab: -x, x0, sigmas, n_steps_each=5, step_lr=1e-4,
                                   callback=lambda info: calls.append((info["i"], info["level"], info["sigma"])),
                                   denoise=True)
    assert [c[0] for c in calls] == list(range(15)) and out.shape == x0.shape
    assert [c[1:] for c in calls[::5]] == [(0, 1.0), (1, 0.5), (2, pytest.approx(0.1))]   # the level of each step


def test_denoise_step_is_tweedie():
    """The optional final step adds sigma_L^2 * s(x): with s = -x/sigma^2 it maps everything to 0."""
    sigmas = torch.tensor([1.0, 0.1])
    x = anneal_langevin_dynamics(lambda x, lab: -x / 0.01, torch.rand(10, 2), sigmas, n_steps_each=1,
                                 step_lr=1e-6, denoise=True)
    torch.testing.assert_close(x, torch.zeros(10, 2), atol=1e-6, rtol=0)


def test_inpainting_keeps_observed_pixels():
    torch.manual_seed(3)
    ref = torch.rand(2, 1, 4, 4)
    mask = torch.zeros_like(ref)
    mask[..., :2] = 1
    sigmas = torch.tensor([0.5, 0.01])
    out = inpainting(anneal_langevin_dynamics, mask, ref)(lambda x, lab: -(x - 0.5), torch.rand(2, 1, 4, 4), sigmas,
                                                          n_steps_each=5, step_lr=1e-3)
    assert (out[..., :2] - ref[..., :2]).abs().max() < 0.1          # observed half: reference + sigma_L noise
    assert (out[..., 2:] - ref[..., 2:]).abs().max() > 0.1          # the rest is sampled


@pytest.mark.parametrize("denoise", [False, True])
def test_inpainting_wrapper_is_the_official_procedure_bit_for_bit(denoise):
    """The wrapper reproduces the official inpainting loop (noise for the observed part drawn once per level, before
    that level's steps; observed part replaced after every step) exactly, random draws included."""
    ref, x0 = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    mask = torch.zeros_like(ref)
    mask[..., :2] = 1
    sigmas, n, lr = [1.0, 0.3, 0.05], 4, 1e-3

    def score(x, labels):
        return -(x - 0.5) / (1 + labels.view(-1, 1, 1, 1).float())

    torch.manual_seed(5)
    x = x0
    for c, sigma in enumerate(sigmas):
        labels = torch.full((3,), c, dtype=torch.long)
        a = lr * (sigma / sigmas[-1]) ** 2
        corrupted = ref + torch.randn_like(ref) * sigma
        x = torch.where(mask.bool(), corrupted, x)
        for _ in range(n):
            x = x + a * score(x, labels) + torch.randn_like(x) * math.sqrt(2 * a)
            x = torch.where(mask.bool(), corrupted, x)
    if denoise:
        x = torch.where(mask.bool(), ref, x + sigmas[-1] ** 2 * score(x, labels))
    torch.manual_seed(5)
    out = inpainting(anneal_langevin_dynamics, mask, ref)(score, x0, sigmas, n_steps_each=n, step_lr=lr,
                                                          denoise=denoise)
    assert torch.equal(out, x)


def test_plain_langevin_is_one_level_of_the_one_sampler():
    """A single level gives steps of exactly step_lr whatever its sigma (also 0: the data's own score)."""
    x0 = torch.rand(5, 2)
    outs = []
    for sigma in (0.0, 0.01, 7.0):
        torch.manual_seed(9)
        outs.append(anneal_langevin_dynamics(unconditional(lambda x: -x), x0, [sigma], n_steps_each=3, step_lr=0.02))
    torch.manual_seed(9)
    x = x0
    for _ in range(3):
        noise = torch.randn_like(x) * math.sqrt(2 * 0.02)
        x = x + 0.02 * (-x) + noise
    for out in outs:
        assert torch.equal(out, x)
