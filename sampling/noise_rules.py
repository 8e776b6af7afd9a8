"""The noise-schedule rules of NCSNv2 (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
Models", Sec. 3): pure functions of tensors and numbers.

* Technique 1 (initial noise scale): "choose sigma_1 to be as large as the maximum Euclidean distance between all
  pairs of training data points" -- :func:`max_pairwise_distance`.
* Technique 2 (other noise scales): "choose {sigma_i} as a geometric progression with common ratio gamma, such that
  Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) ~ 0.5", Phi the standard normal CDF and D
  the data dimension -- :func:`overlap`, :func:`gamma_for_dim`, :func:`num_levels`.
* Technique 4 (selecting T and eps): "choose T as large as allowed by a computing budget and then select an eps that
  makes Eq. (6) maximally close to 1" -- :func:`variance_ratio` (Eq. 6), :func:`step_size_for`.

Eq. (6) (Proposition 3, data N(0, sigma_1^2 I), exact scores): after T steps at level i started from the stationary
distribution of level i-1, ``s_T^2 / sigma_i^2 = r^(2T) (gamma^2 - q) + q`` with ``r = 1 - eps / sigma_L^2`` and
``q = 2 eps / (sigma_L^2 - sigma_L^2 r^2)``.  The 2020 paper's Algorithm 1 and its code step
``x <- x + alpha_i s + sqrt(2 alpha_i) z`` with ``alpha_i = eps sigma_i^2 / sigma_L^2``: exactly this project's
convention (sampling/langevin.py), so ``sampling.step_lr`` IS the 2020 paper's eps (and half the 2019 paper's eps).
tests/test_noise_rules.py pins this by running the project's sampler on Gaussian data.
"""
import math

import torch

from sampling.schedules import geometric_sigmas


def max_pairwise_distance(x, chunk=2048):
    """Exact max_{i,j} ||x_i - x_j||_2 over the rows of ``x`` (N, ...) (every axis after the first is flattened).

    Two passes: a float32 screen of all pairs in ``chunk`` x N blocks (|a|^2 + |b|^2 - 2 a.b, after centring), then
    float64 recomputation of every row whose screened maximum lies within the float32 error bound of the largest one,
    so the result is the float64 maximum over all pairs.  Returns a Python float (0.0 for fewer than two rows).
    """
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    n, dim = x.shape
    if n < 2:
        return 0.0
    x = x - x.mean(0)                                   # translation-invariant; small norms, small rounding error
    x32 = x.to(torch.float32)
    sq32 = (x32 * x32).sum(1)
    row_max = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        block = x32[start:start + chunk]
        d2 = sq32[start:start + chunk, None] + sq32[None, :] - 2 * block @ x32.T
        row_max[start:start + chunk] = d2.max(1).values.to(torch.float64)
    # float32 error of |a|^2 + |b|^2 - 2 a.b: a generous bound of (dim + 8) * u * 4 max|x|^2 (u = 2^-24)
    tol = (dim + 8) * 2.0 ** -24 * 4 * float(sq32.max()) + 1e-30
    candidates = torch.nonzero(row_max >= row_max.max() - 2 * tol).flatten()
    best = 0.0
    for start in range(0, len(candidates), chunk):
        rows = x[candidates[start:start + chunk]]
        best = max(best, float(torch.cdist(rows, x, compute_mode="donot_use_mm_for_euclid_dist").max()))
    return best


def _phi(v):
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def overlap(gamma, dim):
    """Technique 2's expression Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma)."""
    c = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(c + 3.0 * gamma) - _phi(c - 3.0 * gamma)


def gamma_for_dim(dim, target=0.5):
    """The ratio gamma > 1 with ``overlap(gamma, dim) == target`` (bisection to float precision).

    Needs D >= 5: for sqrt(2D) < 3 the expression tends to 1 as gamma grows and never falls to 0.5.
    """
    if not isinstance(dim, int) or dim < 5:
        raise ValueError(f"the data dimension D must be an int >= 5 for Technique 2, got {dim!r}")
    if not 0 < target < overlap(1.0, dim):
        raise ValueError(f"target must be in (0, {overlap(1.0, dim):.4f}), got {target!r}")
    lo, hi = 1.0, 2.0
    while overlap(hi, dim) > target:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if overlap(mid, dim) > target else (lo, mid)
    return 0.5 * (lo + hi)


def num_levels(sigma_begin, sigma_end, gamma):
    """The number of levels L of a geometric schedule from ``sigma_begin`` to ``sigma_end`` whose ratio is at most
    ``gamma``: L = ceil(log(sigma_1 / sigma_L) / log gamma) + 1 (rounded up, so neighbouring levels overlap at least
    as much as the rule asks).  The schedule's own ratio is then :func:`schedule_ratio`."""
    if not 0 < sigma_end < sigma_begin:
        raise ValueError(f"need 0 < sigma_end < sigma_begin, got {sigma_end!r} and {sigma_begin!r}")
    if not gamma > 1:
        raise ValueError(f"gamma must exceed 1, got {gamma!r}")
    steps = math.log(sigma_begin / sigma_end) / math.log(gamma)
    return math.ceil(steps - 1e-9) + 1


def schedule_ratio(sigma_begin, sigma_end, num_classes):
    """gamma = sigma_i / sigma_{i+1} of ``geometric_sigmas(sigma_begin, sigma_end, num_classes)`` (from its values)."""
    sigmas = geometric_sigmas(sigma_begin, sigma_end, num_classes, dtype=torch.float64)
    return float(sigmas[0] / sigmas[1]) if num_classes > 1 else 1.0


def variance_ratio(eps, gamma, sigma_end, n_steps):
    """Eq. (6): s_T^2 / sigma_i^2 after ``n_steps`` = T Langevin steps of size eps (= sampling.step_lr)."""
    if not 0 < eps < 2 * sigma_end ** 2:
        raise ValueError(f"eps must be in (0, 2 sigma_L^2) = (0, {2 * sigma_end ** 2:g}), got {eps!r}")
    u = eps / sigma_end ** 2
    r = 1.0 - u
    q = 1.0 / (1.0 - u / 2)         # = 2 eps / (sigma_L^2 - sigma_L^2 r^2), without its cancellation for small eps
    return r ** (2 * n_steps) * (gamma ** 2 - q) + q


def step_size_for(gamma, sigma_end, n_steps):
    """Technique 4: the eps in (0, sigma_L^2) that brings Eq. (6) closest to 1 for T = ``n_steps``.

    Eq. (6) exceeds 1 for every eps (its limit q = 1 / (1 - eps / (2 sigma_L^2)) does), so this is its minimiser:
    a log-spaced scan, then golden-section search on log eps around the best point.
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    s2 = sigma_end ** 2

    def gap(log_eps):
        return abs(variance_ratio(math.exp(log_eps), gamma, sigma_end, n_steps) - 1.0)
    grid = [math.log(s2) - 30.0 * k / 600 for k in range(1, 601)]          # eps from sigma_L^2 e^-0.05 down
    k = min(range(len(grid)), key=lambda j: gap(grid[j]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    lo, hi = min(lo, hi), max(lo, hi)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (lo, b) if gap(a) < gap(b) else (a, hi)
    return math.exp(0.5 * (lo + hi))
