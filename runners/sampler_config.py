"""Wiring of ``sampling.method`` and ``eval.bpd`` for the AnnealRunner: the sampler, its start and its settings from
the config (one helper for --test, --eval and inpainting), and bits/dim of test images.  The maths is in sampling/
and evaluation/likelihood.py."""
import functools
import logging
from dataclasses import dataclass

import torch

from datasets import data_transform, get_dataset
from errors import UserError
from sampling import SAMPLERS, initial_state, interpolated_score, prior_mean
from sampling.pc import pc_updates
from sampling.schedules import host_sigmas


@dataclass(frozen=True)
class SamplerChoice:
    sample: object        # sampler(score_fn, x, sigmas, *, callback=None, project=None) -> x, settings bound
    settings: dict        # the method and its settings (config key names), for metrics.json and the log
    total: int            # callback calls of one run (a progress bar's length)
    init: object          # init(n, shape, device) -> the initial state (n, *shape)


def sampler_from_config(config, n_levels):
    """The sampler of ``sampling.method`` with its ``sampling.*`` settings bound (see docs/sampling.md)."""
    smp, d = config.sampling, config.data
    method = smp.method
    if method == "langevin":
        kwargs = {"n_steps_each": smp.n_steps_each, "step_lr": smp.step_lr}
        total = n_levels * smp.n_steps_each
    elif method == "pc":
        kwargs = {"predictor": smp.predictor, "corrector": smp.corrector, "snr": smp.snr,
                  "n_steps_each": smp.n_steps_each}
        total = pc_updates(n_levels, smp.predictor, smp.corrector, smp.n_steps_each)
    else:
        kwargs = {"method": smp.ode_method, "rtol": smp.ode_rtol, "atol": smp.ode_atol}
        total = n_levels - 1 + int(smp.denoise)
    kwargs["denoise"] = smp.denoise
    name = {"langevin": "annealed_langevin"}.get(method, method)
    recorded = {f"ode_{k}" if method == "ode" and k != "denoise" else k: v for k, v in kwargs.items()}
    sigma_max = config.model.sigma_begin

    def init(n, shape, device):
        return initial_state(method, (n, *shape), sigma_max, logit_transform=d.logit_transform, device=device)
    return SamplerChoice(functools.partial(SAMPLERS[method], **kwargs), {"method": name, **recorded}, total, init)


def check_bpd(config):
    """Refuse eval.bpd where it is not defined, before any sample is drawn."""
    if config.eval.bpd and config.data.logit_transform:
        raise UserError("eval.bpd needs data.logit_transform false (the logit's Jacobian is not accounted for)")


def bpd_of_test_set(config, model, sigmas, run_root, seed, device):
    """Bits/dim of the first ``eval.bpd_n`` test images (uniformly dequantised as in training, with the random
    numbers of ``seed``) through the probability-flow ODE, in batches of ``eval.bpd_batch_size`` (batch k seeded
    with ``seed + k``); returns the record for metrics.json."""
    from evaluation.likelihood import bits_per_dim, gaussian_log_density, ode_log_likelihood
    e, d = config.eval, config.data
    _, test = get_dataset(d, run_root)
    n = min(e.bpd_n, len(test))
    sigma_list = host_sigmas(sigmas)
    score_at = interpolated_score(model, sigma_list)
    mean = prior_mean(d.logit_transform)

    def prior(z):
        return gaussian_log_density(z, mean, sigma_list[0])
    values, nfes = [], []
    for k, start in enumerate(range(0, n, e.bpd_batch_size)):     # not eval.batch_size: the ODE takes gradients
        images = torch.stack([test[i][0] for i in range(start, min(n, start + e.bpd_batch_size))]).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            x = data_transform(images, d)
        logp, nfe = ode_log_likelihood(score_at, x, sigma_list[-1], sigma_list[0], prior,
                                       method=config.sampling.ode_method, rtol=e.bpd_rtol, atol=e.bpd_atol,
                                       probe=e.bpd_probe, seed=seed + k)
        values.append(bits_per_dim(logp.double(), x[0].numel()).cpu())
        nfes.append(nfe)
        logging.info("bits/dim: %d of %d test images, %d network evaluations for this batch", start + len(x), n, nfe)
    bpd = torch.cat(values)
    record = {"bpd": float(bpd.mean()), "bpd_std_error": float(bpd.std() / len(bpd) ** 0.5) if len(bpd) > 1 else None,
              "bpd_n": n, "bpd_batch_size": e.bpd_batch_size, "bpd_nfe_per_batch": nfes, "bpd_probe": e.bpd_probe,
              "bpd_rtol": e.bpd_rtol,
              "bpd_atol": e.bpd_atol, "bpd_ode_method": config.sampling.ode_method, "bpd_prior_mean": mean,
              "bpd_sigma_range": [sigma_list[-1], sigma_list[0]]}
    logging.info("bits/dim %.4f +- %.4f on %d test images (the model at sigma_L = %g)", record["bpd"],
                 record["bpd_std_error"] or 0.0, n, sigma_list[-1])
    return record
