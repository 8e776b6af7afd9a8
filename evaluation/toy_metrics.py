"""Metrics of 2-D toy experiments: of samples (paper Figure 3 in numbers: the fraction of samples nearest each mode,
a kernel MMD between two sample sets) and of score models (Fisher divergences to a known exact score)."""
import torch


def mmd2(x, y, bandwidths=(0.5, 1.0, 2.0, 4.0)):
    """Unbiased squared MMD between samples x (N, d) and y (M, d) with a sum of Gaussian kernels.

    About 0 (and possibly slightly negative) when x and y come from the same distribution.
    """
    x, y = x.detach().cpu().to(torch.float64), y.detach().cpu().to(torch.float64)

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h ** 2)) for h in bandwidths)
    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def mode_metrics(dist, x, reference=None, min_fraction=0.25):
    """Mode statistics of samples x (N, 2) under ``dist``.

    mode_weights: fraction of samples nearest each mode, in the order of ``dist.means``;
    weight_tv: total-variation distance 0.5 * sum |w_k - pi_k| to the true weights;
    modes_covered: modes holding at least ``min_fraction`` of their expected share pi_k;
    mmd2: unbiased squared MMD to ``reference`` (i.i.d. data samples), when given.
    """
    counts = torch.bincount(dist.nearest_mode(x).cpu(), minlength=dist.n_modes).to(torch.float64)
    w = counts / len(x)
    out = {"mode_weights": [round(v, 4) for v in w.tolist()],
           "true_weights": [round(v, 4) for v in dist.weights.tolist()],
           "weight_tv": round(0.5 * float((w - dist.weights).abs().sum()), 4),
           "modes_covered": int((w >= min_fraction * dist.weights).sum()),
           "n_modes": dist.n_modes,
           "n_samples": len(x)}
    if reference is not None:
        out["mmd2"] = round(mmd2(x, reference), 5)
    return out


@torch.no_grad()
def fisher_divergence(score_fn, exact_score, x):
    """0.5 E ||s(x) - grad log p(x)||^2 over the points x (N, d), with the exact score ``exact_score(x)``."""
    return 0.5 * (score_fn(x) - exact_score(x)).pow(2).sum(1).mean()


@torch.no_grad()
def annealed_fisher_divergence(ncsn, exact_score, x, sigmas):
    """The same for a noise-conditional ``ncsn(x, labels)`` at one random level per point, on x + sigma z, weighted by
    sigma^2 like the annealed DSM objective; ``exact_score(x, sigma)`` is the perturbed data's score."""
    labels = torch.randint(0, len(sigmas), (x.shape[0],), device=x.device)
    s = sigmas[labels][:, None]                                             # (N, 1)
    xt = x + s * torch.randn_like(x)
    err = (ncsn(xt, labels) - exact_score(xt, s)).pow(2).sum(1)
    return 0.5 * (err * s[:, 0] ** 2).mean()
