"""Sampling: noise schedules and samplers, pure functions (score function and tensors in, tensors out).

Every sampler has ONE signature, ``sampler(score_fn, x, sigmas, *, ..., callback=None, project=None) -> x``, with a
conditional ``score_fn(x, labels)`` (labels index ``sigmas``), a ``callback(info)`` that receives
``{"i", "x", "level", "sigma"}`` after every update, and a ``project(x, level, sigma)`` hook through which wrappers
such as :func:`inpainting` constrain the state.  Nothing here reads files, loggers or devices, and only
``from_config.py`` reads a config (the ``sampling`` section, into a ``SamplerChoice``: the sampler, its levels and the
chain start in the compute path's layout); models/ holds the networks, commands/ decides what to keep of a chain.  ``SAMPLERS`` (sampling/methods.py) names them:
``langevin`` (the paper's annealed Langevin), ``pc`` (score_sde's predictor-corrector), ``ode`` (the
probability-flow ODE, torchdiffeq), ``heun``, ``dpmpp_2m`` and ``euler_ancestral`` (EDM's and k-diffusion's samplers on
a Karras schedule, with a budget of network evaluations; karras.py).  noise_rules.py: NCSNv2's rules for the noise levels and the step size
(Techniques 1, 2, 4).
"""
from sampling.langevin import anneal_langevin_dynamics, inpainting, unconditional
from sampling.methods import SAMPLERS, initial_state, prior_mean
from sampling.ode import flow_drift, interpolated_score, ode_sampler
from sampling.pc import pc_sampler
from sampling.schedules import append_dims, geometric_sigmas

__all__ = ["anneal_langevin_dynamics", "inpainting", "unconditional", "geometric_sigmas", "append_dims",
           "pc_sampler", "ode_sampler", "interpolated_score", "flow_drift", "SAMPLERS", "initial_state",
           "prior_mean"]
