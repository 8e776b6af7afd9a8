"""Held-out score matching losses on fixed noise, to compare checkpoints of a run (pure functions).

The estimator (Song & Ermon 2019, Eq. 6, with every test image at every level instead of one random level each)::

    loss_i = 1/N sum_n  lambda(sigma_i) * 0.5 * || s(x~_ni, i) + z_ni / sigma_i ||^2,   x~_ni = x_n + sigma_i z_ni
    mean   = 1/L sum_i  loss_i,                                                    lambda(sigma) = sigma^weight_power

``x_n`` is the n-th test image after the training transform (uniform dequantisation with a fixed draw, then the
optional logit), ``z_ni`` standard normal noise.  With ``weight_power`` = anneal_power (2) this is the NCSN training
objective at its official weighting, with the 1/L sum over levels done exactly (training draws one level per
example).  ``algo="ssm"`` replaces the DSM term by sliced score matching with variance reduction at the perturbed
point (Song et al. 2019), averaged over ``n_particles`` Gaussian projections v::

    loss_i = 1/N sum_n  lambda(sigma_i) * 1/P sum_p [ 0.5 ||s(x~_ni)||^2 + v_p^T d(v_p^T s(x~_ni)) / dx ]

which is the annealed SSM objective (``losses.anneal_sliced_per_example``, lambda = sigma^2).  The two terms are
those of losses/ (``dsm_per_example``, ``ssm_vr_terms``), given this noise.  Both estimate the
Fisher divergence between the model and the perturbed data up to a constant that does not depend on the network, so
checkpoints of one run rank the same way under either in expectation; the numbers of the two are not comparable.

The noise is fixed: image n (its index in the order the batches come, so the numbers do not depend on the batch
size) draws its dequantisation noise u_n ~ U[0,1)^D, then z_n (L, D) and, for SSM, v_n (L, P, D), in that order, from
its own CPU ``torch.Generator`` seeded by a hash of ``(seed, n)``; the global RNG is neither used nor changed.  So
every checkpoint sees exactly the same noisy images, and differences between checkpoints are not noise draws.
Unconditional networks (the single-level BaselineRunner and ScoreNetRunner) pass ``conditional=False`` and one sigma
(which may be 0 for SSM on raw data) with ``weight_power=0``.
"""
import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from datasets.transforms import logit_transform
from losses import dsm_per_example
from losses.sliced_sm import ssm_vr_terms


@dataclass(frozen=True)
class HeldOutLoss:
    """How a runner's checkpoints are scored on held-out images (the arguments of :func:`per_level_test_loss`):
    ``name`` for tables, ``algo`` 'dsm' or 'ssm', ``conditional`` (the network takes level labels), ``sigmas``,
    the weight sigma^``weight_power``, ``n_particles`` (SSM) and the fixed training ``transform``."""
    name: str
    algo: str
    conditional: bool
    sigmas: Sequence
    weight_power: float
    n_particles: int
    transform: Callable


def image_generator(seed, index):
    """The CPU generator of test image ``index`` under ``seed``: a 63-bit hash of both, independent of torch's RNG."""
    digest = hashlib.blake2b(f"ncsn-test-loss:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def fixed_noise(seed, index, shape, n_levels, n_particles=0):
    """The noise of test image ``index``: (u (*shape) in [0, 1), z (L, *shape), v (L, P, *shape) or None), on the
    CPU, so that it is the same on every device."""
    g = image_generator(seed, index)
    u = torch.rand(shape, generator=g)
    z = torch.randn((n_levels, *shape), generator=g)
    v = torch.randn((n_levels, n_particles, *shape), generator=g) if n_particles else None
    return u, z, v


def fixed_transform(dequantize=True, logit=False):
    """The training transform of ``datasets.data_transform`` with its dequantisation noise given:
    ``f(x, u) = [logit](x * 255/256 + u/256)``; ``f(x, u) = [logit](x)`` when ``dequantize`` is False."""
    def transform(x, u):
        if dequantize:
            x = x / 256. * 255. + u / 256.
        return logit_transform(x) if logit else x
    return transform


def _dsm_terms(score_fn, x, sigma, z, labels):
    """0.5 * ||s(x + sigma z) + z / sigma||^2 per example, (B,): ``losses.dsm_per_example`` with the noise z."""
    with torch.no_grad():
        return dsm_per_example(lambda xt: score_fn(xt, labels), x, sigma, noise=z)[0]


def _ssm_terms(score_fn, x, sigma, z, v, labels):
    """SSM-VR (``losses.ssm_vr_terms``) at x + sigma z, averaged over the P projections v (B, P, *D), per example,
    (B,)."""
    b, p = v.shape[:2]
    perturbed = (x + sigma * z).unsqueeze(1).expand(b, p, *x.shape[1:]).reshape(b * p, *x.shape[1:])
    flat_v = v.reshape(b * p, *x.shape[1:])
    flat_labels = None if labels is None else labels.repeat_interleave(p)
    with torch.enable_grad():
        loss1, loss2 = ssm_vr_terms(lambda xt: score_fn(xt, flat_labels), perturbed, flat_v, create_graph=False)
    return (loss1 + loss2).detach().view(b, p).mean(1)


def per_level_test_loss(score_fn, batches, sigmas, *, seed=0, weight_power=2.0, algo="dsm", n_particles=1,
                        transform=None, conditional=True, max_images=None, device=None, total=None,
                        desc="test loss", progress=True):
    """Test loss of ``score_fn`` at every level on fixed noise (see the module docstring for the estimator).

    score_fn: ``score_fn(x, labels)`` (``conditional``; labels (B,) index ``sigmas``) or ``score_fn(x)``.
    batches: an iterable of image batches (B, C, H, W) in [0, 1], or of ``(images, labels)`` pairs (labels ignored).
    sigmas: (L,) noise levels.  transform: ``f(x, u)`` (:func:`fixed_transform`; default: dequantise, no logit).
    max_images: stop after this many images.  total: the number of batches, for the progress bar.

    Returns a dict: ``mean`` (float, 1/L sum of the per-level means), ``per_level`` (list of L floats), ``stderr``
    (standard error of ``mean`` over images), ``n_images``, ``sigmas`` (list) and ``per_image`` ((N, L) float64
    tensor of weighted per-image losses, for paired comparisons).  Non-finite network outputs give non-finite numbers.
    """
    if algo not in ("dsm", "ssm"):
        raise ValueError(f"algo must be 'dsm' or 'ssm', got {algo!r}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
    n_levels = len(sigmas)
    if algo == "dsm" and not bool((sigmas > 0).all()):
        raise ValueError("DSM needs every sigma > 0")
    transform = transform or fixed_transform()
    weights = [float(s) ** weight_power if weight_power else 1.0 for s in sigmas.tolist()]
    call = score_fn if conditional else (lambda x, labels: score_fn(x))
    rows, offset = [], 0
    bar = tqdm(batches, total=total, desc=desc, unit="batch", dynamic_ncols=True, mininterval=1.0,
               disable=not progress)
    try:
        for batch in bar:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if max_images is not None:
                x = x[: max(0, max_images - offset)]
            if len(x) == 0:
                break
            shape = tuple(x.shape[1:])
            draws = [fixed_noise(seed, offset + k, shape, n_levels, n_particles if algo == "ssm" else 0)
                     for k in range(len(x))]
            dev = device if device is not None else x.device
            u = torch.stack([d[0] for d in draws]).to(dev)
            z = torch.stack([d[1] for d in draws]).to(dev)                          # (B, L, *D)
            v = torch.stack([d[2] for d in draws]).to(dev) if algo == "ssm" else None
            x = transform(x.to(dev, torch.float32), u)
            per_image = torch.empty(len(x), n_levels, dtype=torch.float64)
            for i in range(n_levels):
                sigma = float(sigmas[i])
                labels = torch.full((len(x),), i, dtype=torch.long, device=dev) if conditional else None
                if algo == "dsm":
                    terms = _dsm_terms(call, x, sigma, z[:, i], labels)
                else:
                    terms = _ssm_terms(call, x, sigma, z[:, i], v[:, i], labels)
                per_image[:, i] = terms.detach().double().cpu() * weights[i]
            rows.append(per_image)
            offset += len(x)
            if max_images is not None and offset >= max_images:
                break
    finally:
        bar.close()
    if not rows:
        raise ValueError("no test images")
    per_image = torch.cat(rows)                                                       # (N, L)
    per_level = per_image.mean(0)
    image_means = per_image.mean(1)
    n = len(per_image)
    stderr = float(image_means.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(per_level.mean()), "per_level": per_level.tolist(), "stderr": stderr, "n_images": n,
            "sigmas": sigmas.tolist(), "per_image": per_image}
