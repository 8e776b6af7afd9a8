"""Samplers on a Karras schedule over the NCSN's continuous score, with the one sampler signature and a budget of
network evaluations: ``heun`` (EDM's 2nd-order Heun sampler, Karras et al. 2022, Algorithm 2, with its optional
stochastic churn), ``dpmpp_2m`` (DPM-Solver++(2M), Lu et al. 2022, for the VE ODE) and ``euler_ancestral``; the
names are k-diffusion's and EDM's.

All three work with the denoiser of the VE SDE, ``D(x, sigma) = x + sigma^2 s(x, sigma)`` (Tweedie), where
``s(x, sigma)`` is :func:`sampling.ode.interpolated_score`: the network at a trained level, between two levels the
interpolation that the probability-flow ODE uses (the network at both: two evaluations).  The probability-flow ODE in
sigma is ``dx/dsigma = (x - D(x, sigma)) / sigma``.

Schedule.  ``n`` points from sigma_1 down to sigma_L (the model's largest and smallest levels)::

    sigma_i = (sigma_1^(1/rho) + i / (n - 1) (sigma_L^(1/rho) - sigma_1^(1/rho)))^rho,   rho = 7,

and with ``denoise`` one more step from sigma_L to 0: ``x <- D(x, sigma_L) = x + sigma_L^2 s(x, L)``, the final
denoising step of the other samplers (for Heun it is EDM's first-order last step).  Without ``denoise`` the chains
stop at sigma_L, as annealed Langevin's do.

NFE.  ``nfe`` is a budget of network evaluations per sample, counted exactly (one at a level, two between levels;
:func:`plan` picks the longest schedule within it, :func:`evaluation_sigmas` lists where a run evaluates); each
callback's ``info["nfe"]`` is the count so far.

Churn (``heun`` only, ``s_churn`` > 0): before each step the noise is raised from sigma_i to
``sigma_hat = sigma_i (1 + gamma)``, ``gamma = min(s_churn / N, sqrt(2) - 1)`` (N steps), by adding
``sqrt(sigma_hat^2 - sigma_i^2) z``; EDM's S_tmin = 0, S_tmax = inf and S_noise = 1.  sigma_hat is capped at sigma_1:
the network knows no larger level (so the first step, at sigma_1, churns nothing).
"""
import math

import torch

from errors import UserError
from sampling.ode import interpolated_score, network_passes
from sampling.schedules import host_sigmas

RHO = 7.0
KARRAS_METHODS = ("heun", "dpmpp_2m", "euler_ancestral")


def karras_sigmas(sigma_max, sigma_min, n, rho=RHO):
    """``n`` >= 2 descending noise levels from ``sigma_max`` to ``sigma_min`` (both included), evenly spaced in
    sigma^(1/rho) (EDM's schedule), as Python floats."""
    if n < 2:
        raise ValueError(f"a Karras schedule needs at least 2 points, got {n}")
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    inner = [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(1, n - 1)]
    return [float(sigma_max), *inner, float(sigma_min)]


def churn_gamma(s_churn, n_steps):
    """EDM's churn per step, ``min(s_churn / N, sqrt(2) - 1)`` (0 without churn)."""
    return min(s_churn / n_steps, math.sqrt(2) - 1) if s_churn > 0 else 0.0


def evaluation_sigmas(method, schedule, s_churn=0.0):
    """The sigmas at which ``method`` evaluates the score on ``schedule`` (descending, ending at 0 with the final
    denoising step), in order: what a run costs, before it runs."""
    steps = len(schedule) - 1
    gamma = churn_gamma(s_churn, steps) if method == "heun" else 0.0
    out = []
    for sigma, following in zip(schedule[:-1], schedule[1:]):
        if method == "heun":
            out.append(min(sigma * (1 + gamma), schedule[0]))
            if following > 0:
                out.append(following)
        else:
            out.append(sigma)
    return out


def fewest_evaluations(method, denoise=False):
    """The network evaluations per sample of the shortest run of ``method`` (one step from sigma_1 to sigma_L, both
    trained levels; one more for the final denoising step)."""
    return (2 if method == "heun" else 1) + int(denoise)


def setting_error(method, nfe, denoise, s_churn):
    """``(key, message)`` for sampling settings these samplers cannot honour (``s_churn`` with a method other than
    heun; an ``nfe`` below the method's fewest evaluations), else None: the config's check (configs/schema.py)."""
    if s_churn > 0 and method != "heun":
        return "sampling.s_churn", (f"sampling.s_churn is EDM's churn of sampling.method heun; with method {method} "
                                    f"it would be ignored: leave it at 0")
    if method in KARRAS_METHODS and nfe < fewest_evaluations(method, denoise):
        return "sampling.nfe", nfe_too_small(method, nfe, denoise, fewest_evaluations(method, denoise))
    return None


def plan(method, sigmas, nfe, *, denoise=False, s_churn=0.0):
    """The longest schedule (a list of floats, see the module docstring) whose run of ``method`` costs at most
    ``nfe`` network evaluations per sample on the levels ``sigmas``; a UserError if even one step costs more."""
    sigma_list = host_sigmas(sigmas)
    passes = network_passes(sigma_list)

    def schedule(n):
        return karras_sigmas(sigma_list[0], sigma_list[-1], n) + ([0.0] if denoise else [])

    def cost(n):
        return sum(passes(s) for s in evaluation_sigmas(method, schedule(n), s_churn))
    if cost(2) > nfe:
        raise UserError(nfe_too_small(method, nfe, denoise, cost(2)))
    n = 2
    while cost(n + 1) <= nfe:                      # cost grows with n (by 1 to 4 a point)
        n += 1
    return schedule(n)


def nfe_too_small(method, nfe, denoise, fewest):
    return (f"sampling.nfe {nfe} is below the fewest network evaluations of sampling.method {method}"
            f"{' with sampling.denoise' if denoise else ''} ({fewest}); raise sampling.nfe")


class _Run:
    """What the three samplers share: the planned schedule on the levels, the denoiser of the interpolated score
    with its count of network evaluations, and the report of each step (inpainting's projection, the callback)."""

    def __init__(self, score_fn, sigmas, method, nfe, denoise, s_churn, callback, project):
        sigma_list = host_sigmas(sigmas)
        self.schedule = plan(method, sigma_list, nfe, denoise=denoise, s_churn=s_churn)
        self.score_at, self.passes = interpolated_score(score_fn, sigma_list), network_passes(sigma_list)
        self.callback, self.project, self.nfe = callback, project, 0

    def denoised(self, x, sigma):
        """``D(x, sigma) = x + sigma^2 s(x, sigma)``, counting its network evaluations."""
        self.nfe += self.passes(sigma)
        return x + sigma ** 2 * self.score_at(x, sigma)

    def start(self, x):
        return x if self.project is None else self.project(x, 0, self.schedule[0])

    def report(self, step, x, sigma):
        """The state after step ``step`` (at ``sigma``): projected (``level=None`` at sigma 0, after the final
        denoising step) and passed to the callback."""
        if self.project is not None:
            x = self.project(x, None if sigma == 0 else step + 1, sigma)
        if self.callback is not None:
            self.callback({"i": step, "x": x, "level": step + 1, "sigma": sigma, "nfe": self.nfe})
        return x


def _keep(step, x, sigma):
    return x


def heun_steps(denoised, x, schedule, *, s_churn=0.0, report=_keep, project=None):
    """EDM's Heun steps along ``schedule`` (descending; a final 0 is a first-order step) with a denoiser
    ``denoised(x, sigma)``; ``report(i, x, sigma) -> x`` after each step, ``project(x, i, sigma_hat)`` on a churned
    state."""
    gamma = churn_gamma(s_churn, len(schedule) - 1)
    for i, (sigma, following) in enumerate(zip(schedule[:-1], schedule[1:])):
        sigma_hat = min(sigma * (1 + gamma), schedule[0])
        if sigma_hat > sigma:
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * torch.randn_like(x)
            if project is not None:
                x = project(x, i, sigma_hat)
        d = (x - denoised(x, sigma_hat)) / sigma_hat
        x_next = x + (following - sigma_hat) * d
        if following > 0:
            d_next = (x_next - denoised(x_next, following)) / following
            x_next = x + (following - sigma_hat) * 0.5 * (d + d_next)
        x = report(i, x_next, following)
    return x


def dpmpp_2m_steps(denoised, x, schedule, *, report=_keep):
    """DPM-Solver++(2M) steps along ``schedule`` in lambda = -log sigma (k-diffusion's ``sample_dpmpp_2m``): a
    first-order step first and onto sigma = 0, else the second-order multistep update from the last two denoised
    states."""
    previous = None
    for i, (sigma, following) in enumerate(zip(schedule[:-1], schedule[1:])):
        d = denoised(x, sigma)
        if following == 0:
            x_next = d
        else:
            h = math.log(sigma) - math.log(following)
            estimate = d
            if previous is not None:
                r = (math.log(schedule[i - 1]) - math.log(sigma)) / h
                estimate = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * previous
            x_next = (following / sigma) * x - math.expm1(-h) * estimate
        previous = d
        x = report(i, x_next, following)
    return x


def euler_ancestral_steps(denoised, x, schedule, *, report=_keep):
    """Euler ancestral steps along ``schedule`` (k-diffusion's ``sample_euler_ancestral``, eta = 1): an Euler step
    of the ODE down to ``sigma_down``, then fresh noise ``sigma_up z`` back up to the next point, with
    ``sigma_up = sigma_next sqrt(1 - sigma_next^2 / sigma^2)``, ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``."""
    for i, (sigma, following) in enumerate(zip(schedule[:-1], schedule[1:])):
        up = following * math.sqrt(max(0.0, 1 - following ** 2 / sigma ** 2))
        down = math.sqrt(max(0.0, following ** 2 - up ** 2))
        d = (x - denoised(x, sigma)) / sigma
        x = x + (down - sigma) * d
        if following > 0:
            x = x + up * torch.randn_like(x)
        x = report(i, x, following)
    return x


@torch.no_grad()
def heun_sampler(score_fn, x, sigmas, *, nfe=35, s_churn=0.0, denoise=False, callback=None, project=None):
    """EDM's Heun sampler (module docstring) with a conditional ``score_fn(x, labels)`` on the descending levels
    ``sigmas`` (L,); x: (B, *D) a draw of the prior N(mean, sigma_1^2 I).  ``project(x, level, sigma)`` at each
    schedule point (``level`` is its index; the churned state of a step keeps its point's index);
    ``callback(info)`` after each step with ``{"i", "x", "level", "sigma", "nfe"}``.  Returns the final state."""
    run = _Run(score_fn, sigmas, "heun", nfe, denoise, s_churn, callback, project)
    return heun_steps(run.denoised, run.start(x), run.schedule, s_churn=s_churn, report=run.report, project=project)


@torch.no_grad()
def dpmpp_2m_sampler(score_fn, x, sigmas, *, nfe=35, denoise=False, callback=None, project=None):
    """DPM-Solver++(2M) (:func:`dpmpp_2m_steps`); arguments as :func:`heun_sampler`."""
    run = _Run(score_fn, sigmas, "dpmpp_2m", nfe, denoise, 0.0, callback, project)
    return dpmpp_2m_steps(run.denoised, run.start(x), run.schedule, report=run.report)


@torch.no_grad()
def euler_ancestral_sampler(score_fn, x, sigmas, *, nfe=35, denoise=False, callback=None, project=None):
    """Euler ancestral sampling (:func:`euler_ancestral_steps`); arguments as :func:`heun_sampler`."""
    run = _Run(score_fn, sigmas, "euler_ancestral", nfe, denoise, 0.0, callback, project)
    return euler_ancestral_steps(run.denoised, run.start(x), run.schedule, report=run.report)


def planned_run(method, sigmas, nfe, *, denoise=False, s_churn=0.0):
    """``(steps, evaluations)`` of a run of ``method`` within the budget ``nfe``: its callback calls (the schedule's
    intervals) and its exact network evaluations per sample (what ``info["nfe"]`` reaches)."""
    schedule = plan(method, sigmas, nfe, denoise=denoise, s_churn=s_churn)
    passes = network_passes(host_sigmas(sigmas))
    return len(schedule) - 1, sum(passes(s) for s in evaluation_sigmas(method, schedule, s_churn))
