"""Two-dimensional toy distributions (paper Figures 2 and 3) with exact densities and scores of their perturbations.

A :class:`GaussianMixture` with components N(mu_k, std^2 I) and weights pi_k.  Perturbing it with N(0, sigma^2 I)
gives the mixture with the same means and weights and std sqrt(std^2 + sigma^2): ``log_prob(x, sigma)`` and
``score(x, sigma)`` are that density and its exact gradient, in closed form (sigma = 0 is the data itself).

Note: the official ``GMMDistAnneal.score(x, sigma)`` used components of std ``sigma`` instead of
sqrt(1 + sigma^2) (in the official ``models/gmm.py``); it is exact only at sigma = 1.  Here the perturbed score is the
true one.

The metrics of samples from them (mode weights, MMD) live in evaluation/toy_metrics.py.
"""
import math

import torch


class GaussianMixture:
    """sum_k pi_k N(mu_k, std^2 I) in 2-D.  ``means`` (K, 2), ``weights`` (K,), ``std`` a float."""

    def __init__(self, means, weights, std, name="mixture"):
        self.means = torch.as_tensor(means, dtype=torch.float64)             # (K, 2)
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()                                           # (K,)
        self.std = float(std)
        self.name = name

    @property
    def n_modes(self):
        return self.means.shape[0]

    def sample(self, n, generator=None):
        """n i.i.d. samples (n, 2), float32; ``generator`` makes them reproducible without the global RNG."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)      # (n,)
        z = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        return (self.means[k] + self.std * z).float()

    def _log_components(self, x, sigma):
        """log pi_k + log N(x; mu_k, s^2 I), s^2 = std^2 + sigma^2: (N, K) float64 on x's device; and s^2 (N or 1, 1).

        ``sigma`` is a number or a tensor with one value per row of x.
        """
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)   # (1 or N, 1)
        var = self.std ** 2 + sigma ** 2
        means, weights = self.means.to(x.device), self.weights.to(x.device)
        d = x.shape[1]
        sq = (x[:, None, :] - means[None]).pow(2).sum(-1)                  # (N, K)
        return weights.log()[None] - sq / (2 * var) - 0.5 * d * torch.log(2 * math.pi * var), var

    def log_prob(self, x, sigma=0.0):
        """log p_sigma(x) for x (N, 2): the data density convolved with N(0, sigma^2 I).  Returns (N,) in x's dtype.

        ``sigma``: a number, or a tensor of N values (one noise level per row).
        """
        logc, _ = self._log_components(x, sigma)
        return torch.logsumexp(logc, dim=1).to(x.dtype)

    def score(self, x, sigma=0.0):
        """grad_x log p_sigma(x) = sum_k r_k(x) (mu_k - x) / (std^2 + sigma^2), r = responsibilities.  (N, 2)."""
        logc, var = self._log_components(x, sigma)
        r = torch.softmax(logc, dim=1)                                       # (N, K)
        mean = r @ self.means.to(r.device)                                   # (N, 2): E[mu_k | x]
        return ((mean - x.to(torch.float64)) / var).to(x.dtype)

    def level_score(self, sigmas):
        """The exact noise-conditional score ``score(x, labels)`` on the levels ``sigmas`` (one level per example, as
        a learned NCSN takes them): what a perfectly trained NCSN of this distribution computes."""
        return lambda x, labels: self.score(x, sigmas[labels][:, None])

    def nearest_mode(self, x):
        """Index of the nearest mean for each row of x (N, 2).  Returns (N,) long."""
        return torch.cdist(x.to(torch.float64), self.means.to(x.device)).argmin(dim=1)


def two_gaussians():
    """The official mixture 0.8 N((5, 5), I) + 0.2 N((-5, -5), I); modes in that order."""
    return GaussianMixture([[5.0, 5.0], [-5.0, -5.0]], [0.8, 0.2], 1.0, name="2gauss")


def ring(n_modes=8, radius=5.0, std=0.5):
    """``n_modes`` equal Gaussians N(mu_k, std^2 I), mu_k = radius (cos 2 pi k/n, sin 2 pi k/n), k = 0, 1, ..."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)        # (n_modes, 2)
    return GaussianMixture(means, torch.ones(n_modes), std, name="ring")


def toy_distribution(toy_cfg):
    """The distribution named by ``toy.dataset`` (a configs.schema.Toy)."""
    if toy_cfg.dataset == "2gauss":
        return two_gaussians()
    if toy_cfg.dataset == "ring":
        return ring(toy_cfg.ring_modes, toy_cfg.ring_radius, toy_cfg.ring_std)
    raise ValueError(f"unknown toy data set {toy_cfg.dataset!r}")
