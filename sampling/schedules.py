"""Noise levels: the one geometric schedule of the paper (Sec. 4.2), the levels as host numbers for the samplers'
step sizes, and the helper that broadcasts one value per example over an example's axes (used by the losses and
samplers alike)."""
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


def host_sigmas(sigmas):
    """The noise levels ``sigmas`` (a tensor on any device, or numbers) as a list of Python floats, read once before
    a sampler's loop: one device-to-host copy for a tensor (``tolist``; ``float`` of each element would wait for the
    device once per level), the same values bit for bit.  Step sizes computed from these floats cost the sampler's
    update loop no host synchronisation."""
    if isinstance(sigmas, torch.Tensor):
        return [float(s) for s in sigmas.detach().reshape(-1).tolist()]
    return [float(s) for s in sigmas]
