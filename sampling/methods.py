"""The samplers by name (``sampling.method``), and the initial state each one starts from.

One plain dict: ``langevin`` is the paper's annealed Langevin dynamics (sampling/langevin.py), ``pc`` score_sde's
predictor-corrector sampler (sampling/pc.py), ``ode`` the probability-flow ODE (sampling/ode.py), ``heun``,
``dpmpp_2m`` and ``euler_ancestral`` EDM's and k-diffusion's samplers on a Karras schedule (sampling/karras.py).

Initial states.  Annealed Langevin starts from U[0, 1) as official (its chain mixes, so the start matters little).
The others start, as in score_sde and EDM, from the VE SDE's prior N(PRIOR_MEAN, sigma_1^2 I); the ODE is
deterministic, so its samples are only as good as this start.  score_sde centres the prior at 0 for data in
[-1, 1]; NCSN data lie in [0, 1] (logit space: around 0), so the centre of the data range is used here, and the
likelihood (evaluation/likelihood.py) uses the same prior.
"""
import torch

from sampling.karras import dpmpp_2m_sampler, euler_ancestral_sampler, heun_sampler
from sampling.langevin import anneal_langevin_dynamics
from sampling.ode import ode_sampler
from sampling.pc import pc_sampler

SAMPLERS = {"langevin": anneal_langevin_dynamics, "pc": pc_sampler, "ode": ode_sampler, "heun": heun_sampler,
            "dpmpp_2m": dpmpp_2m_sampler, "euler_ancestral": euler_ancestral_sampler}


def prior_mean(logit_transform):
    """The centre of the data range: 0.5 for data in [0, 1], 0 in logit space."""
    return 0.0 if logit_transform else 0.5


def initial_state(method, shape, sigma_max, *, logit_transform=False, device=None):
    """The starting state (N, *D) of ``method``: U[0, 1) for ``langevin`` (official), else a prior draw
    ``prior_mean + sigma_max * z``; drawn from the global random state."""
    if method == "langevin":
        return torch.rand(*shape, device=device)
    return prior_mean(logit_transform) + sigma_max * torch.randn(*shape, device=device)
