"""Langevin samplers (pure functions: score function and tensors in, final state out).

Step-size convention (kept from the official code, pinned by tests/test_langevin.py)::

    x <- x + a * s(x) + sqrt(2 a) * z,        z ~ N(0, I)

with ``a = step_lr`` for plain Langevin and ``a_i = step_lr * (sigma_i / sigma_L)^2`` at noise level i for annealed
Langevin.  The paper's Algorithm 1 writes ``x <- x + (alpha_i / 2) s + sqrt(alpha_i) z`` with
``alpha_i = eps * sigma_i^2 / sigma_L^2``, so ``step_lr`` here is the paper's ``eps / 2`` (the official default
``step_lr = 2e-5`` is ``eps = 4e-5`` in the paper's units).

``callback(i, x)`` is called after every update ``i = 0, 1, ...`` with the current state; the samplers keep nothing
else, so no host copies are made unless the callback makes them.
"""
import math

import torch


@torch.no_grad()
def langevin_dynamics(score_fn, x, n_steps=1000, step_lr=2e-5, callback=None):
    """Plain (non-annealed) Langevin dynamics with an unconditional ``score_fn(x)``.  Returns the final x."""
    noise_std = math.sqrt(2 * step_lr)
    for i in range(n_steps):
        noise = torch.randn_like(x) * noise_std
        x = x + step_lr * score_fn(x) + noise
        if callback is not None:
            callback(i, x)
    return x


@torch.no_grad()
def anneal_langevin_dynamics(score_fn, x, sigmas, n_steps_each=100, step_lr=2e-5, callback=None,
                             denoise=False, mask=None, reference=None):
    """Annealed Langevin dynamics (paper Algorithm 1) with a conditional ``score_fn(x, labels)``.

    x: (B, *D) initial state; sigmas: (L,) descending noise levels; labels passed to ``score_fn`` are the level
    indices (B,).  ``denoise`` adds one final step ``x + sigma_L^2 s(x, L-1)`` (off by default, as official).
    Inpainting: with ``mask`` (1 = observed, broadcastable to x) and ``reference`` (like x), the observed part is
    replaced at every step by ``reference + sigma_i * z``, with z drawn once per noise level (as official).
    Returns the final state (B, *D).
    """
    sigma_list = [float(s) for s in sigmas]
    step = 0
    labels = None
    for c, sigma in enumerate(sigma_list):
        labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        step_size = step_lr * (sigma / sigma_list[-1]) ** 2
        noise_std = math.sqrt(2 * step_size)
        if mask is not None:
            corrupted = reference + torch.randn_like(reference) * sigma
            x = torch.where(mask.bool(), corrupted, x)
        for _ in range(n_steps_each):
            noise = torch.randn_like(x) * noise_std
            x = x + step_size * score_fn(x, labels) + noise
            if mask is not None:
                x = torch.where(mask.bool(), corrupted, x)
            if callback is not None:
                callback(step, x)
            step += 1
    if denoise and labels is not None:
        x = x + sigma_list[-1] ** 2 * score_fn(x, labels)
        if mask is not None:
            x = torch.where(mask.bool(), reference, x)
    return x
