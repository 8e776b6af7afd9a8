"""Log-likelihoods and bits/dim through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2): pure
tensor functions, the drift from sampling/ode.py (one implementation of it).

With ``t = log sigma`` and the drift f of :func:`sampling.ode.flow_drift`, the instantaneous change of variables
gives ``d log p_t(x(t)) / dt = -div f(x(t), t)``, so integrating the data x from sigma_L up to sigma_1::

    log p_{sigma_L}(x) = log prior(x(sigma_1)) + int_{log sigma_L}^{log sigma_1} div f(x(t), t) dt

``div f`` by Hutchinson's estimator ``e^T (df/dx) e`` (one vector-Jacobian product) with one probe e per example,
Rademacher or Gaussian, drawn once from a seeded generator and held for the whole solve (FFJORD, score_sde).  The
density is that of the model at the NCSN's smallest level sigma_L (the ODE is not defined below it).

The prior is N(m, sigma_1^2 I) (:func:`gaussian_log_density`).  score_sde uses m = 0 for data in [-1, 1]; NCSN data
lie in [0, 1], and the sigma_1-perturbed data have about the data's mean, so m = 0.5, the centre of the data range
(``sampling.prior_mean``), is used by the runner; the samplers start from the same prior.
"""
import math

import torch

from sampling.ode import DEFAULT_MAX_NFE, flow_drift, solve


def gaussian_log_density(z, mean, std):
    """log N(z; mean, std^2 I) per example (B,) of z (B, *D)."""
    d = z[0].numel()
    return -0.5 * d * math.log(2 * math.pi * std ** 2) - ((z - mean) ** 2).flatten(1).sum(1) / (2 * std ** 2)


def hutchinson_probes(like, kind, seed):
    """Probes shaped like ``like``: Rademacher (+-1) or standard Gaussian, from a generator seeded with ``seed``."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    if kind == "rademacher":
        return torch.randint(0, 2, like.shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)
    raise ValueError(f"unknown probe kind {kind!r}")


def ode_log_likelihood(score_at, x, sigma_min, sigma_max, prior_log_density, *, method="dopri5", rtol=1e-5,
                       atol=1e-5, probe="rademacher", seed=0, max_nfe=DEFAULT_MAX_NFE, callback=None):
    """``(log p_{sigma_min}(x) (B,), nfe)`` for x (B, *D) under the probability-flow ODE of the continuous score
    ``score_at(x, sigma)`` (e.g. :func:`sampling.ode.interpolated_score` of an NCSN); ``prior_log_density(z) -> (B,)``
    at sigma_max.  nfe counts drift evaluations (each also one vector-Jacobian product).

    ``max_nfe`` (``eval.bpd_max_nfe``): a solve needing more evaluations is one UserError naming that key (and an
    ``underflow in dt`` one naming ``eval.bpd_rtol / eval.bpd_atol``: :func:`sampling.ode.solve`).  ``callback(nfe)``
    is called after every evaluation with the count so far (a progress bar's postfix)."""
    counter = [0]
    drift = flow_drift(score_at, counter, max_nfe)
    probes = hutchinson_probes(x, probe, seed)

    def augmented(t, state):
        y = state[0]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = drift(t, y)
            (vjp,) = torch.autograd.grad(f, y, probes)
        if callback is not None:
            callback(counter[0])
        return f.detach(), (vjp * probes).flatten(1).sum(1)

    times = torch.tensor([math.log(sigma_min), math.log(sigma_max)], dtype=torch.float64, device=x.device)
    start = (x.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    ys, integrals = solve(augmented, start, times, method=method, rtol=rtol, atol=atol, max_nfe=max_nfe,
                          nfe_key="eval.bpd_max_nfe", tolerance_keys="eval.bpd_rtol / eval.bpd_atol",
                          goal=f"sigma_1 = {sigma_max:g}")
    return prior_log_density(ys[-1]) + integrals[-1], counter[0]


def bits_per_dim(log_density, n_dims, n_bits=8):
    """Bits/dim of ``n_bits`` data from the log density (B,) of its uniformly dequantised version scaled to [0, 1]
    (y = (k + u) / 2^n_bits, k the integer pixel, u ~ U[0, 1)): the discrete model's log P(k) >= log p(y) - D log
    2^n_bits, so bits/dim = -log p(y) / (D ln 2) + n_bits."""
    return -log_density / (n_dims * math.log(2)) + n_bits
