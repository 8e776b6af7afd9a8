"""Langevin samplers with the one sampler signature, and inpainting as a wrapper around any sampler.

Step-size convention (kept from the official code, pinned by tests/test_sampling.py)::

    x <- x + a * s(x) + sqrt(2 a) * z,        z ~ N(0, I)

with ``a_i = step_lr * (sigma_i / sigma_L)^2`` at noise level i.  The paper's Algorithm 1 writes
``x <- x + (alpha_i / 2) s + sqrt(alpha_i) z`` with ``alpha_i = eps * sigma_i^2 / sigma_L^2``, so ``step_lr`` here is
the paper's ``eps / 2`` (the official default ``step_lr = 2e-5`` is ``eps = 4e-5`` in the paper's units).

Plain (non-annealed) Langevin dynamics is the same sampler with a single level: ``a = step_lr`` whatever that
level's sigma is (``sigmas=[sigma]``, ``n_steps_each = n_steps``, and :func:`unconditional` around a score ``s(x)``).

``callback(info)`` is called after every update with ``info = {"i": step, "x": state, "level": c, "sigma": sigma_c}``;
the samplers keep nothing else, so no host copies are made unless the callback makes them.
"""
import math

import torch

from sampling.schedules import host_sigmas


def unconditional(score_fn):
    """``score_fn(x)`` -> the conditional signature ``f(x, labels)`` that every sampler calls (labels ignored)."""
    return lambda x, labels: score_fn(x)


@torch.no_grad()
def anneal_langevin_dynamics(score_fn, x, sigmas, *, n_steps_each=100, step_lr=2e-5, denoise=False, callback=None,
                             project=None):
    """Annealed Langevin dynamics (paper Algorithm 1) with a conditional ``score_fn(x, labels)``.

    x: (B, *D) initial state; sigmas: (L,) descending noise levels (a tensor or a list of numbers); labels passed to
    ``score_fn`` are the level indices (B,).  ``denoise`` adds one final step ``x + sigma_L^2 s(x, L-1)`` (off by
    default, as official).  ``project(x, level, sigma) -> x`` is applied when a level starts and after every update
    (``level=None, sigma=0`` after the final denoising step).  Returns the final state (B, *D).
    """
    sigma_list = host_sigmas(sigmas)
    last = sigma_list[-1]
    step = 0
    labels = None
    for c, sigma in enumerate(sigma_list):
        labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        step_size = step_lr * (1.0 if sigma == last else (sigma / last) ** 2)
        noise_std = math.sqrt(2 * step_size)
        if project is not None:
            x = project(x, c, sigma)
        for _ in range(n_steps_each):
            noise = torch.randn_like(x) * noise_std
            x = x + step_size * score_fn(x, labels) + noise
            if project is not None:
                x = project(x, c, sigma)
            if callback is not None:
                callback({"i": step, "x": x, "level": c, "sigma": sigma})
            step += 1
    if denoise and labels is not None:
        x = x + last ** 2 * score_fn(x, labels)
        if project is not None:
            x = project(x, None, 0.0)
    return x


def inpainting(sampler, mask, reference):
    """Wrap ``sampler`` (any sampler of the one signature) so that it completes ``reference`` where ``mask`` is 0.

    mask: 1 = observed, broadcastable to x; reference: like x.  As in the official procedure, the observed part is
    replaced at every update by ``reference + sigma * z``, with z drawn once per noise level (when the sampler's
    ``level`` changes; sigma is the state's noise level, so a sampler that raises the noise within a level, EDM's churn,
    scales the same z), and by ``reference`` itself after a final denoising step.  Returns a sampler with the same
    signature.
    """
    observed = mask.bool()

    def sample(score_fn, x, sigmas, **kwargs):
        held = {"level": None, "z": None}

        def project(x, level, sigma):
            if level is None:
                return torch.where(observed, reference, x)
            if held["level"] != level:
                held["level"], held["z"] = level, torch.randn_like(reference)
            return torch.where(observed, reference + held["z"] * sigma, x)
        return sampler(score_fn, x, sigmas, project=project, **kwargs)
    return sample

