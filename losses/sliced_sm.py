"""Sliced score matching with variance reduction (Song et al. 2019, "Sliced Score Matching").

    J(theta) = E_x E_v [ 0.5 * ||s(x)||^2 + v^T grad_x (v^T s(x)) ],   v ~ N(0, I)

For the exact score of N(0, s^2 I) in d dimensions the expectation is -d / (2 s^2).
The input must be differentiable: these functions call ``requires_grad_`` on a detached copy.
"""
import torch
import torch.autograd as autograd

from sampling.schedules import append_dims


def ssm_vr_terms(score_fn, x, vectors, create_graph=True):
    """Return (loss1, loss2), each (N,): 0.5*||s||^2 and v^T d(v^T s)/dx on flattened inputs.  ``create_graph``
    (training) keeps the graph, so that the loss can be back-propagated into the network parameters; a held-out
    loss needs only the values."""
    x = x.detach().requires_grad_(True)
    grad1 = score_fn(x)                                             # (N, *D)
    gradv = torch.sum(grad1 * vectors)
    loss1 = 0.5 * grad1.flatten(1).pow(2).sum(1)                    # (N,)
    grad2 = autograd.grad(gradv, x, create_graph=create_graph)[0]
    loss2 = (vectors * grad2).flatten(1).sum(1)                     # (N,)
    return loss1, loss2


def _terms(score_net, samples, n_particles):
    dup = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    return ssm_vr_terms(score_net, dup, torch.randn_like(dup))          # each (n_particles * B,)


def sliced_per_example(score_net, samples, n_particles=1):
    """SSM-VR per projected example of an unconditional ``score_net(x)``.  Returns ((n_particles * B,), None)."""
    loss1, loss2 = _terms(score_net, samples, n_particles)
    return loss1 + loss2, None


def sliced_score_estimation_vr(score_net, samples, n_particles=1):
    """Official ``sliced_score_estimation_vr``: returns ``(loss.mean(), loss1.mean(), loss2.mean())``."""
    loss1, loss2 = _terms(score_net, samples, n_particles)
    loss = loss1 + loss2
    return loss.mean(), loss1.mean(), loss2.mean()


def anneal_sliced_per_example(scorenet, samples, labels, sigmas, n_particles=1):
    """Annealed SSM per perturbed example, weighted by sigma^2 (the official power is fixed at 2).

    Returns (n_particles * B,) losses and the matching (n_particles * B,) labels.
    """
    used_sigmas = append_dims(sigmas[labels], samples.ndim)          # (B, 1, ..., 1)
    perturbed = samples + torch.randn_like(samples) * used_sigmas
    dup = perturbed.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    dup_labels = labels.unsqueeze(0).expand(n_particles, *labels.shape).contiguous().view(-1)
    # the official comment says Rademacher; the official code draws Gaussian projections, as here
    vectors = torch.randn_like(dup)
    loss1, loss2 = ssm_vr_terms(lambda x: scorenet(x, dup_labels), dup, vectors)
    return (loss1 + loss2) * sigmas[dup_labels] ** 2, dup_labels


def anneal_sliced_score_estimation_vr(scorenet, samples, labels, sigmas, n_particles=1):
    """Official ``anneal_sliced_score_estimation_vr``: batch mean of :func:`anneal_sliced_per_example`."""
    return anneal_sliced_per_example(scorenet, samples, labels, sigmas, n_particles)[0].mean(dim=0)
