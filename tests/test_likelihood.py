"""Bits/dim machinery against a Gaussian whose perturbed log density is exact."""
import math

import pytest
import torch

from evaluation.likelihood import bits_per_dim, gaussian_log_density, hutchinson_probes, ode_log_likelihood
from sampling import geometric_sigmas, interpolated_score

MU, S, SIGMA_MIN, SIGMA_MAX = 0.3, 0.2, 0.05, 1.0
TOLERANCE = 2e-3            # nats per example, D = 8; measured error ~1e-4 at rtol = atol = 1e-5


def exact_score(x, sigma):
    return -(x - MU) / (S ** 2 + sigma ** 2)


def exact_prior(z):
    return gaussian_log_density(z, MU, math.sqrt(S ** 2 + SIGMA_MAX ** 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ode_likelihood_matches_exact_gaussian(dtype):
    """With the exact score of N(MU, S^2 I) perturbed by sigma and Rademacher probes (exact for a diagonal
    Jacobian), log p_{sigma_L}(x) = log N(x; MU, (S^2 + sigma_L^2) I) within TOLERANCE nats per example."""
    torch.manual_seed(0)
    x = (MU + 0.3 * torch.randn(16, 2, 2, 2)).to(dtype)
    logp, nfe = ode_log_likelihood(exact_score, x, SIGMA_MIN, SIGMA_MAX, exact_prior)
    exact = gaussian_log_density(x, MU, math.sqrt(S ** 2 + SIGMA_MIN ** 2))
    assert (logp - exact).abs().max().item() < TOLERANCE * (1 if dtype == torch.float64 else 5)
    assert 6 <= nfe <= 500


def test_gaussian_probes_are_unbiased_and_seeded():
    torch.manual_seed(1)
    x = MU + 0.3 * torch.randn(400, 8, dtype=torch.float64)
    exact = gaussian_log_density(x, MU, math.sqrt(S ** 2 + SIGMA_MIN ** 2))
    logp, _ = ode_log_likelihood(exact_score, x, SIGMA_MIN, SIGMA_MAX, exact_prior, probe="gaussian", rtol=1e-4,
                                 atol=1e-4)
    err = logp - exact
    assert err.abs().max() > 0.01                                  # single probes are noisy ...
    assert err.mean().abs() < 4 * err.std() / math.sqrt(len(err))  # ... but unbiased (4 standard errors)
    assert torch.equal(hutchinson_probes(x, "gaussian", 3), hutchinson_probes(x, "gaussian", 3))
    assert set(hutchinson_probes(x, "rademacher", 3).unique().tolist()) == {-1.0, 1.0}


def test_interpolated_ncsn_score_likelihood_close_to_exact():
    """Through the NCSN's discrete levels (30 geometric levels, interpolated between): within 0.02 nats."""
    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, 30, dtype=torch.float64)

    def level_score(x, labels):
        return -(x - MU) / (S ** 2 + sigmas[labels].view(-1, 1) ** 2)
    torch.manual_seed(2)
    x = MU + 0.3 * torch.randn(8, 4, dtype=torch.float64)
    logp, _ = ode_log_likelihood(interpolated_score(level_score, sigmas), x, SIGMA_MIN, SIGMA_MAX, exact_prior)
    exact = gaussian_log_density(x, MU, math.sqrt(S ** 2 + SIGMA_MIN ** 2))
    assert (logp - exact).abs().max().item() < 0.02


def test_bits_per_dim_of_uniform_data():
    """U[0, 1) data have log p = 0: 8 bits/dim, the cost of 8-bit pixels with no model of them."""
    assert bits_per_dim(torch.zeros(3), 784).tolist() == [8.0] * 3
    assert bits_per_dim(torch.tensor([-784 * math.log(2)]), 784).item() == pytest.approx(9.0)
