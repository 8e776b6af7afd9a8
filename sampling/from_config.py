"""The one place that reads the ``sampling`` section: a :class:`SamplerChoice` (the sampler of ``sampling.method``
with its settings bound, its noise levels, where its chains start and what to record of it), for --test, --eval,
inpainting, training previews and the quality-against-cost study alike.  The chain start is drawn in the compute
path's memory layout (``compute.channels_last``), so no caller deals with the layout; the maths is in the other
modules of sampling/."""
import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

from compute.precision import to_layout
from sampling.karras import KARRAS_METHODS, planned_run
from sampling.langevin import anneal_langevin_dynamics
from sampling.methods import SAMPLERS, initial_state
from sampling.pc import pc_updates

PROGRESS_NAMES = {"langevin": "annealed Langevin", "pc": "predictor-corrector", "ode": "probability-flow ODE",
                  "heun": "Heun (EDM)", "dpmpp_2m": "DPM-Solver++(2M)", "euler_ancestral": "Euler ancestral"}
# what to change when the chains diverge: the setting of each sampler's step
DIVERGENCE_HINTS = {"langevin": "a smaller sampling.step_lr may help",
                    "pc": "a smaller sampling.snr may help: the corrector's step comes from it",
                    "ode": "smaller sampling.ode_rtol / sampling.ode_atol may help",
                    **{m: "a larger sampling.nfe (more, smaller steps) may help" for m in KARRAS_METHODS}}


@dataclass(frozen=True)
class SamplerChoice:
    sample: Callable      # sampler(score_fn, x, sigmas, *, callback=None, project=None) -> x, settings bound
    sigmas: object        # (L,) the noise levels the chains anneal through (float64 step sizes, as official)
    settings: dict        # the method and its settings (config key names), for the log
    record: dict          # what metrics.json and the export's manifest record of the sampler
    total: int            # callback calls of one run (a progress bar's length)
    start: Callable       # start(n) -> the initial state (n, C, H, W) of n chains, on the device, in the layout
    name: str             # for progress bars
    hint: str = "a smaller sampling.step_lr may help"     # what to change when the chains diverge

    def run(self, score_fn, x, callback=None, project=None):
        """The chains from ``x`` to samples (``callback(info)`` after every update)."""
        return self.sample(score_fn, x, self.sigmas, callback=callback, project=project)


def chain_start(config, method, device):
    """``start(n)``: ``n`` initial states of ``method`` for the images of ``config.data`` (sampling/methods.py),
    drawn from the global random state, in ``config.compute``'s memory layout."""
    d = config.data
    shape = (d.channels, d.image_size, d.image_size)

    def start(n):
        x = initial_state(method, (n, *shape), config.model.sigma_begin, logit_transform=d.logit_transform,
                          device=device)
        return to_layout(x, config.compute)
    return start


def sampler_from_config(config, sigmas, device, **overrides):
    """The sampler of ``sampling.method`` through the levels ``sigmas`` with its ``sampling.*`` settings bound (see
    docs/sampling.md); ``overrides`` replace sampling keys (a training preview: a short annealed Langevin chain)."""
    smp = dataclasses.replace(config.sampling, **overrides)
    method, n_levels = smp.method, len(sigmas)
    if method == "langevin":
        kwargs = {"n_steps_each": smp.n_steps_each, "step_lr": smp.step_lr}
        total = n_levels * smp.n_steps_each
        nfe = total + int(smp.denoise)
    elif method == "pc":
        kwargs = {"predictor": smp.predictor, "corrector": smp.corrector, "snr": smp.snr,
                  "n_steps_each": smp.n_steps_each}
        total = nfe = pc_updates(n_levels, smp.predictor, smp.corrector, smp.n_steps_each)
    elif method in KARRAS_METHODS:
        kwargs = {"nfe": smp.nfe, **({"s_churn": smp.s_churn} if method == "heun" else {})}
        total, nfe = planned_run(method, sigmas, smp.nfe, denoise=smp.denoise, s_churn=smp.s_churn)
    else:
        kwargs = {"method": smp.ode_method, "rtol": smp.ode_rtol, "atol": smp.ode_atol, "max_nfe": smp.ode_max_nfe}
        total = n_levels - 1 + int(smp.denoise)
        nfe = None          # adaptive: the solver reports it per batch
    kwargs["denoise"] = smp.denoise
    name = {"langevin": "annealed_langevin"}.get(method, method)
    recorded = {f"ode_{k}" if method == "ode" and k != "denoise" else k: v for k, v in kwargs.items()}
    settings = {"method": name, **recorded}
    return SamplerChoice(sample=functools.partial(SAMPLERS[method], **kwargs), sigmas=sigmas, settings=settings,
                         record={**settings, **({} if nfe is None else {"nfe_per_sample": nfe}),
                                 "sigmas": [float(v) for v in sigmas]}, total=total,
                         start=chain_start(config, method, device), name=PROGRESS_NAMES[method],
                         hint=DIVERGENCE_HINTS[method])


def plain_langevin(config, sigma, device):
    """Plain Langevin dynamics at the one level ``sigma`` from U[0, 1) (``sampling.n_steps`` steps of size
    ``sampling.step_lr``): the sampler of the single-level baseline, for an unconditional score ``s(x, labels)``."""
    smp = config.sampling
    settings = {"method": "langevin", "n_steps": smp.n_steps, "step_lr": smp.step_lr}
    return SamplerChoice(sample=functools.partial(anneal_langevin_dynamics, n_steps_each=smp.n_steps,
                                                  step_lr=smp.step_lr),
                         sigmas=[sigma], settings=settings, record=settings, total=smp.n_steps,
                         start=chain_start(config, "langevin", device), name="Langevin")
