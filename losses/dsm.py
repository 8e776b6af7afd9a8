"""Denoising score matching (Vincent 2011), as used by NCSN.

Paper: Song & Ermon 2019, Eq. (5) for one noise level and Eq. (6) for the annealed objective with
lambda(sigma) = sigma**anneal_power.  The official code replaces the 1/L sum over noise levels by one
uniformly drawn level per example (``labels``); the losses below take those labels as input.

Every loss has a per-example form returning ``(losses (B,), labels (B,) or None)`` -- the same pair for every
objective, so that the training loop and the evaluation treat them alike -- and the official name returning the
official value (the batch mean).
"""
import torch

from sampling.schedules import append_dims


def dsm_per_example(scorenet, samples, sigma=0.01, noise=None):
    """0.5 * ||s(x~) + (x~ - x)/sigma^2||^2 for each example; x~ = x + sigma*z.  Returns ((B,), None)."""
    z = torch.randn_like(samples) if noise is None else noise
    perturbed = samples + sigma * z
    target = -(perturbed - samples) / sigma ** 2           # (B, *D)
    scores = scorenet(perturbed)                            # (B, *D)
    return 0.5 * (scores - target).flatten(1).pow(2).sum(1), None


def dsm_score_estimation(scorenet, samples, sigma=0.01, noise=None):
    """Official ``dsm_score_estimation``: mean over the batch of :func:`dsm_per_example`."""
    return dsm_per_example(scorenet, samples, sigma, noise)[0].mean(dim=0)


def anneal_dsm_per_example(scorenet, samples, labels, sigmas, anneal_power=2., noise=None):
    """Eq. (6) per example: 0.5 * ||s(x~, i) + (x~ - x)/sigma_i^2||^2 * sigma_i^anneal_power.  Returns ((B,), labels).

    ``labels`` (B,) indexes ``sigmas`` (L,); ``noise`` (optional, shaped like ``samples``) replaces the
    standard normal draw, for golden tests.
    """
    used_sigmas = append_dims(sigmas[labels], samples.ndim)          # (B, 1, ..., 1)
    z = torch.randn_like(samples) if noise is None else noise
    perturbed = samples + used_sigmas * z
    target = -(perturbed - samples) / used_sigmas ** 2               # = -z / sigma
    scores = scorenet(perturbed, labels)                              # (B, *D)
    per_example = 0.5 * (scores - target).flatten(1).pow(2).sum(1)    # (B,)
    return per_example * sigmas[labels] ** anneal_power, labels


def anneal_dsm_score_estimation(scorenet, samples, labels, sigmas, anneal_power=2., noise=None):
    """Official ``anneal_dsm_score_estimation``: the batch mean of :func:`anneal_dsm_per_example`."""
    return anneal_dsm_per_example(scorenet, samples, labels, sigmas, anneal_power, noise)[0].mean(dim=0)
