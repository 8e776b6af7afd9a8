"""Metrics of 2-D toy samples (paper Figure 3 in numbers): the fraction of samples nearest each mode and a kernel
MMD between two sample sets."""
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
