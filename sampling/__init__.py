"""Sampling: noise schedules and samplers, pure functions (score function and tensors in, tensors out).

Every sampler has ONE signature, ``sampler(score_fn, x, sigmas, *, ..., callback=None, project=None) -> x``, with a
conditional ``score_fn(x, labels)`` (labels index ``sigmas``), a ``callback(info)`` that receives
``{"i", "x", "level", "sigma"}`` after every update, and a ``project(x, level, sigma)`` hook through which wrappers
such as :func:`inpainting` constrain the state.  Nothing here reads configs, files, loggers or devices; models/ holds
the networks, runners/ decides what to keep of a chain.  noise_rules.py: NCSNv2's rules for the noise levels and the
step size (Techniques 1, 2, 4).
"""
from sampling.langevin import anneal_langevin_dynamics, inpainting, unconditional
from sampling.schedules import append_dims, geometric_sigmas

__all__ = ["anneal_langevin_dynamics", "inpainting", "unconditional", "geometric_sigmas",
           "append_dims"]
