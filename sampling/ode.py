"""The probability-flow ODE of the VE SDE (Song et al. 2021, Sec. 4.3) on the NCSN's noise levels: the drift (the
ONE implementation, shared with the likelihood of evaluation/likelihood.py) and the ODE sampler with the one sampler
signature.

The ODE is ``dx/dsigma = -sigma * s(x, sigma)``.  It is integrated in ``t = log sigma`` (the same ODE,
``dx/dt = -sigma^2 s(x, sigma)``): the levels are geometric, so they are evenly spaced in t and the adaptive solver
sees a drift of about constant scale instead of one that grows like 1 / sigma near sigma_L.

Between levels.  The NCSN knows only its L levels.  :func:`interpolated_score` evaluates the network at the two
neighbouring levels and interpolates ``sigma * s`` (about ``-z``, of unit scale at every level) linearly in log
sigma, then divides by sigma.  Why not the nearest level, as score_sde does for its discrete SMLD models: that drift
is piecewise constant in sigma and jumps at the midpoints between levels, and an adaptive solver rejects steps at
every jump (more evaluations, and its error estimate is wrong across the jump); the interpolation is continuous,
exact at the levels, and costs one network call on 2B examples per drift evaluation (B at a level).

NFE (number of function evaluations) counts drift evaluations, as score_sde reports it; the ODE sampler passes the
running count as ``info["nfe"]`` to its callback.
"""
import math

import torch

from errors import UserError
from sampling.schedules import host_sigmas

# torchdiffeq's solvers (sampling.ode_method); the fixed-step ones step from noise level to noise level
ODE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun3", "rk4")
# The default bound on the network evaluations (NFE) of one ODE solve (sampling.ode_max_nfe, eval.bpd_max_nfe): far
# above what a solve at the default tolerances takes (tens to a few hundred), low enough that a stiff solve stops in
# minutes, not hours.
DEFAULT_MAX_NFE = 10000


class _TooManyEvaluations(Exception):
    """Raised by the drift when a solve exceeds its maximum number of evaluations (see :func:`solve`)."""


# A sigma this close to a trained level (relative) is that level: one network evaluation, not two (the schedules'
# end points are levels, and log/exp round trips move them by an ulp)
LEVEL_SNAP = 1e-9


def level_bracket(sigma_list):
    """``bracket(sigma) -> (lo_level, hi_level, w)`` on descending levels ``sigma_list``: the indices of the two
    levels around ``sigma`` (clamped to [sigma_L, sigma_1]) and its position w in log sigma between them (0 at the
    lower sigma, 1 at the higher); ``(level, level, 0.0)`` where ``sigma`` is a level (log sigma within
    LEVEL_SNAP of it)."""
    n = len(sigma_list)
    ascending = torch.tensor(sigma_list[::-1], dtype=torch.float64).log()

    def bracket(sigma):
        if n == 1:
            return 0, 0, 0.0
        t = min(max(math.log(float(sigma)), float(ascending[0])), float(ascending[-1]))
        k = min(max(int(torch.searchsorted(ascending, torch.tensor(t, dtype=torch.float64))), 1), n - 1)
        low, high = float(ascending[k - 1]), float(ascending[k])
        lo_level, hi_level = n - k, n - 1 - k              # their indices in the descending sigmas
        if t - low <= LEVEL_SNAP:
            return lo_level, lo_level, 0.0
        if high - t <= LEVEL_SNAP:
            return hi_level, hi_level, 0.0
        return lo_level, hi_level, (t - low) / (high - low)
    return bracket


def network_passes(sigma_list):
    """``passes(sigma)``: the network evaluations per example of one :func:`interpolated_score` call at ``sigma``
    (1 at a trained level, 2 between two)."""
    bracket = level_bracket(sigma_list)
    return lambda sigma: 1 if bracket(sigma)[0] == bracket(sigma)[1] else 2


def interpolated_score(score_fn, sigmas):
    """``score_fn(x, labels)`` on descending levels ``sigmas`` -> ``score_at(x, sigma)`` for any sigma in
    [sigma_L, sigma_1] (a float or 0-d tensor; clamped to that range), by linear interpolation of ``sigma * s`` in log
    sigma between the two neighbouring levels (see the module docstring); at a level, that level's score (one
    network evaluation on B examples; :func:`network_passes` counts them)."""
    sigma_list = host_sigmas(sigmas)
    bracket = level_bracket(sigma_list)
    log_sigmas = torch.tensor(sigma_list, dtype=torch.float64).log().tolist()

    def score_at(x, sigma):
        sigma = float(sigma)
        batch = x.shape[0]
        lo_level, hi_level, w = bracket(sigma)
        if lo_level == hi_level:
            return score_fn(x, torch.full((batch,), lo_level, dtype=torch.long, device=x.device))
        labels = torch.tensor([lo_level, hi_level], device=x.device).repeat_interleave(batch)
        both = score_fn(torch.cat([x, x]), labels)
        scaled = ((1 - w) * math.exp(log_sigmas[lo_level]) * both[:batch]
                  + w * math.exp(log_sigmas[hi_level]) * both[batch:])
        return scaled / sigma
    return score_at


def flow_drift(score_at, counter=None, max_nfe=None):
    """The probability-flow drift in t = log sigma: ``drift(t, x) = -sigma^2 s(x, sigma)`` with sigma = exp(t).
    ``counter`` (a list holding one int) is incremented once per evaluation (the NFE); with ``max_nfe``, an
    evaluation beyond that count stops the solve (:func:`solve` turns it into one UserError)."""
    def drift(t, x):
        if counter is not None:
            counter[0] += 1
            if max_nfe is not None and counter[0] > max_nfe:
                raise _TooManyEvaluations
        sigma = math.exp(float(t))
        return -(sigma ** 2) * score_at(x, sigma)
    return drift


def solve(func, y0, times, *, method, rtol, atol, max_nfe, nfe_key, tolerance_keys, goal):
    """torchdiffeq's ``odeint(func, y0, times, method, rtol, atol)``, its failures as one UserError line each.

    ``func`` is a :func:`flow_drift` (or built on one) with ``max_nfe``: a solve that needs more evaluations stops
    with an error naming ``nfe_key`` (the config key to raise), rather than returning a truncated solution (a state
    short of ``goal``, the level it should reach: not a sample, or a likelihood over part of the range, a silently
    wrong number).  torchdiffeq's ``underflow in dt`` (the step size shrank to nothing: the tolerances cannot be met)
    names ``tolerance_keys``."""
    from torchdiffeq import odeint
    try:
        return odeint(func, y0, times, method=method, rtol=rtol, atol=atol)
    except _TooManyEvaluations:
        raise UserError(f"the ODE solver ({method}, rtol {rtol:g}, atol {atol:g}) used its {max_nfe} network "
                        f"evaluations ({nfe_key}) before reaching {goal}; raise {nfe_key}, or loosen "
                        f"{tolerance_keys}") from None
    except AssertionError as e:
        if "underflow in dt" not in str(e):
            raise
        raise UserError(f"the ODE solver ({method}) shrank its step to nothing (underflow in dt): rtol {rtol:g}, "
                        f"atol {atol:g} cannot be met on this model; loosen {tolerance_keys}") from e


def log_sigma_times(sigma_list, device):
    """The integration times t = log sigma of the given sigmas (float64, as torchdiffeq takes them)."""
    return torch.tensor(sigma_list, dtype=torch.float64, device=device).log()


@torch.no_grad()
def ode_sampler(score_fn, x, sigmas, *, method="dopri5", rtol=1e-3, atol=1e-3, denoise=False, callback=None,
                project=None, max_nfe=DEFAULT_MAX_NFE):
    """Integrate the probability-flow ODE from sigma_1 to sigma_L with torchdiffeq's ``odeint`` (``method``,
    ``rtol``, ``atol``; fixed-step methods such as ``euler`` step from level to level).

    x: (B, *D) a draw of the prior N(mean, sigma_1^2 I) (see sampling/methods.py); sigmas: (L,) descending.
    ``callback(info)`` is called at each level after the first, ``{"i", "x", "level", "sigma", "nfe"}`` (nfe: drift
    evaluations so far; with ``denoise`` the final call has ``level=None`` and counts the denoising network call).
    ``project(x, level, sigma)``: with it, the ODE is solved level by level and the state is projected when each
    level starts and at the end (``project(x, None, 0.0)`` after the denoising step), so :func:`inpainting` works
    unchanged; without it the whole range is one solve (fewer evaluations).  ``denoise`` adds the step
    ``x + sigma_L^2 s(x, L)``.  ``max_nfe``: at most this many drift evaluations in all (``sampling.ode_max_nfe``),
    else one UserError (:func:`solve`).  Returns the final state (B, *D).
    """
    sigma_list = host_sigmas(sigmas)
    n = len(sigma_list)
    counter = [0]
    drift = flow_drift(interpolated_score(score_fn, sigma_list), counter, max_nfe)
    times = log_sigma_times(sigma_list, x.device)
    segments = [list(range(n))] if project is None else [[c, c + 1] for c in range(n - 1)]
    step = 0
    for segment in segments if n > 1 else []:
        if project is not None:
            x = project(x, segment[0], sigma_list[segment[0]])
        states = solve(drift, x, times[segment], method=method, rtol=rtol, atol=atol, max_nfe=max_nfe,
                       nfe_key="sampling.ode_max_nfe", tolerance_keys="sampling.ode_rtol / sampling.ode_atol",
                       goal=f"sigma_L = {sigma_list[-1]:g}")
        for j, level in enumerate(segment[1:], 1):
            x = states[j]
            if callback is not None:
                callback({"i": step, "x": x, "level": level, "sigma": sigma_list[level], "nfe": counter[0]})
            step += 1
    if project is not None:
        x = project(x, n - 1, sigma_list[-1])
    if denoise:
        labels = torch.full((x.shape[0],), n - 1, dtype=torch.long, device=x.device)
        x = x + sigma_list[-1] ** 2 * score_fn(x, labels)
        counter[0] += 1
        if project is not None:
            x = project(x, None, 0.0)
        if callback is not None:
            callback({"i": step, "x": x, "level": None, "sigma": 0.0, "nfe": counter[0]})
    return x
