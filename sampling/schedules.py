"""Noise levels: the one geometric schedule of the paper (Sec. 4.2), and the helper that broadcasts one value per
example over an example's axes (used by the losses and samplers alike)."""
import math

import torch


def geometric_sigmas(sigma_begin, sigma_end, num_classes, dtype=torch.float32, device=None):
    """{sigma_i}, i = 1..L, a descending geometric sequence from ``sigma_begin`` to ``sigma_end``.

    Same values as the official ``np.exp(np.linspace(np.log(begin), np.log(end), L))``: computed in float64,
    then cast to ``dtype`` (the official training code uses float32).  Returns a tensor of shape (L,).
    """
    logs = torch.linspace(math.log(sigma_begin), math.log(sigma_end), num_classes, dtype=torch.float64)
    return logs.exp().to(dtype=dtype, device=device)


def append_dims(v, ndim):
    """Append trailing singleton axes to ``v`` (B,) until it has ``ndim`` axes: (B,) -> (B, 1, ..., 1)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))
