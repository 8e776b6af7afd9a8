"""Score-matching losses against analytic ground truth."""
import math

import pytest
import torch

from losses import (
    anneal_dsm_per_example,
    anneal_dsm_score_estimation,
    anneal_sliced_per_example,
    anneal_sliced_score_estimation_vr,
    dsm_per_example,
    dsm_score_estimation,
    sliced_per_example,
    sliced_score_estimation_vr,
)
from sampling import geometric_sigmas


def gaussian_score(s):
    return lambda x, *labels: -x / s ** 2


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_ssm_exact_score_expectation(shape):
    """For N(0, s^2 I) in d dims and its exact score, E[0.5||s||^2 + v^T ds v] = d/(2 s^2) - d/s^2 = -d/(2 s^2)."""
    torch.manual_seed(0)
    s = 0.7
    d = math.prod(shape)
    x = torch.randn(20000, *shape) * s
    loss, loss1, loss2 = sliced_score_estimation_vr(gaussian_score(s), x, n_particles=1)
    expected = -d / (2 * s ** 2)
    assert loss.item() == pytest.approx(expected, rel=0.03)
    assert loss1.item() == pytest.approx(d / (2 * s ** 2), rel=0.03)     # E||x||^2/(2 s^4) = d/(2 s^2)
    assert loss2.item() == pytest.approx(-d / s ** 2, rel=0.03)          # v^T (-I/s^2) v


def test_ssm_prefers_true_score():
    """The SSM objective is lower for the true score than for a wrongly scaled one."""
    torch.manual_seed(1)
    x = torch.randn(20000, 3)
    true = sliced_score_estimation_vr(gaussian_score(1.0), x)[0].item()
    wrong = sliced_score_estimation_vr(gaussian_score(1.5), x)[0].item()
    assert true == pytest.approx(-1.5, rel=0.03) and true < wrong


def test_anneal_ssm_weights_and_particles():
    """Annealed SSM with exact perturbed scores: per level E = -d/(2(1+sigma^2)) * sigma^2 (data ~ N(0, I))."""
    torch.manual_seed(2)
    sigmas = torch.tensor([2.0, 0.5])
    x = torch.randn(20000, 2)
    labels = torch.randint(0, 2, (20000,))

    def score(xt, lab):        # x + sigma z ~ N(0, (1 + sigma^2) I)
        return -xt / (1 + sigmas[lab][:, None] ** 2)
    loss = anneal_sliced_score_estimation_vr(score, x, labels, sigmas, n_particles=2).item()
    per_level = [-(2 / (2 * (1 + s ** 2))) * s ** 2 for s in sigmas.tolist()]
    assert loss == pytest.approx(sum(per_level) / 2, rel=0.05)


def test_dsm_exact_score_is_minimiser():
    """Point data x = 0: the exact score -x~/sigma^2 gives loss 0; a score scaled by c gives 0.5 (1-c)^2 d / sigma^2."""
    torch.manual_seed(3)
    sigma, d = 0.3, 2
    x = torch.zeros(20000, d)
    assert dsm_score_estimation(lambda xt: -xt / sigma ** 2, x, sigma=sigma).item() == pytest.approx(0.0, abs=1e-8)
    for c in (0.9, 1.1):
        loss = dsm_score_estimation(lambda xt, c=c: -c * xt / sigma ** 2, x, sigma=sigma).item()
        assert loss == pytest.approx(0.5 * (1 - c) ** 2 * d / sigma ** 2, rel=0.03)


def test_dsm_minimiser_is_perturbed_data_score():
    """Data ~ N(0, I): among scores -c x~, DSM is minimised at the perturbed-data score c = 1/(1 + sigma^2)."""
    torch.manual_seed(5)
    sigma = 0.5
    x = torch.randn(50000, 2)
    cs = torch.linspace(0.5, 1.1, 13)
    losses = []
    for c in cs.tolist():
        torch.manual_seed(6)                        # same noise for every candidate
        losses.append(dsm_score_estimation(lambda xt, c=c: -c * xt, x, sigma=sigma).item())
    best = cs[int(torch.tensor(losses).argmin())].item()
    assert best == pytest.approx(1 / (1 + sigma ** 2), abs=0.05)


def test_anneal_dsm_matches_formula_and_weights():
    """Eq. (6) by hand with fixed noise: 0.5 ||s + z/sigma||^2 sigma^power, per example; mean = official value."""
    torch.manual_seed(4)
    sigmas = geometric_sigmas(1.0, 0.01, 10, dtype=torch.float64)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    z = torch.randn_like(x)
    labels = torch.tensor([0, 3, 9, 9, 5, 1])

    def net(xt, lab):
        return torch.sin(xt) * (lab[:, None, None, None] + 1)
    for power in (2.0, 1.0):
        per, per_labels = anneal_dsm_per_example(net, x, labels, sigmas, power, noise=z)
        assert per_labels is labels
        sig = sigmas[labels].view(-1, 1, 1, 1)
        xt = x + sig * z
        by_hand = 0.5 * ((net(xt, labels) + z / sig) ** 2).flatten(1).sum(1) * sigmas[labels] ** power
        torch.testing.assert_close(per, by_hand, rtol=1e-12, atol=0)
        mean = anneal_dsm_score_estimation(net, x, labels, sigmas, power, noise=z)
        torch.testing.assert_close(mean, by_hand.mean(), rtol=1e-12, atol=0)


def test_anneal_dsm_exact_perturbed_score_for_point_data():
    """Data at one point x0: the score of N(x0, sigma_i^2) gives zero annealed DSM loss at every level."""
    sigmas = torch.tensor([1.0, 0.1])
    x0 = torch.full((100, 3), 0.25)
    labels = torch.arange(100) % 2
    loss = anneal_dsm_score_estimation(lambda xt, lab: -(xt - 0.25) / sigmas[lab][:, None] ** 2, x0, labels, sigmas)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)


def test_every_per_example_form_returns_losses_and_labels_and_its_mean_is_the_official_value():
    """One return shape for every objective: (losses (N,), labels (N,) or None); same draws -> the official mean."""
    sigmas = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1])

    def cond(xt, lab):
        return -xt * (lab.view(-1, 1, 1, 1) + 1)
    uncond = torch.sin
    cases = [  # (per-example form, official form, expected labels, expected N)
        (lambda: dsm_per_example(uncond, x, sigma=0.1), lambda: dsm_score_estimation(uncond, x, sigma=0.1), None, 5),
        (lambda: anneal_dsm_per_example(cond, x, labels, sigmas),
         lambda: anneal_dsm_score_estimation(cond, x, labels, sigmas), labels, 5),
        (lambda: sliced_per_example(uncond, x, n_particles=2), lambda: sliced_score_estimation_vr(uncond, x, 2)[0],
         None, 10),
        (lambda: anneal_sliced_per_example(cond, x, labels, sigmas, n_particles=2),
         lambda: anneal_sliced_score_estimation_vr(cond, x, labels, sigmas, n_particles=2), labels.repeat(2), 10),
    ]
    for per_example, official, expected_labels, n in cases:
        torch.manual_seed(11)
        losses, got_labels = per_example()
        torch.manual_seed(11)
        value = official()
        assert losses.shape == (n,)
        assert (got_labels is None) == (expected_labels is None)
        if expected_labels is not None:
            assert torch.equal(got_labels, expected_labels)
        torch.testing.assert_close(losses.mean(), value, rtol=1e-12, atol=0)
