"""The predictor-corrector sampler of score_sde (Song et al. 2021, Algorithms 2-4) for the VE SDE on the NCSN's L
discrete noise levels, with the one sampler signature.

At level i (sigma_i, descending; sigma_{L+1} = 0), the corrector runs first, then the predictor, as in score_sde:

* corrector ``langevin`` (``n_steps_each`` steps)::

      eps = 2 * (snr * ||z|| / ||s||)^2,   x_mean = x + eps * s(x, i),   x = x_mean + sqrt(2 eps) z

  with the norms over each example's values (score_sde takes the batch means of the per-example norms, so the step
  of one example depends on the others; here each example has its own step, which keeps a sample independent of its
  batch).  The "2 alpha" of score_sde is 2 for the VE SDE (alpha = 1).
* predictor ``reverse_diffusion`` (one step; the discretised reverse VE SDE, "SMLD" in score_sde)::

      x_mean = x + (sigma_i^2 - sigma_{i+1}^2) s(x, i),   x = x_mean + sqrt(sigma_i^2 - sigma_{i+1}^2) z

``denoise`` returns the last ``x_mean`` (score_sde's ``noise_removal``): the state without the noise of the final
update; with the reverse-diffusion predictor that is the Tweedie step ``x + sigma_L^2 s(x, L)``.

``predictor="none", corrector="langevin"`` is annealed Langevin dynamics with score_sde's adaptive step size (the
"corrector only" sampler); ``corrector="none"`` is the plain reverse-diffusion ("predictor only") sampler.
"""
import torch

from sampling.schedules import append_dims, host_sigmas

PREDICTORS = ("reverse_diffusion", "none")
CORRECTORS = ("langevin", "none")


def pc_updates(n_levels, predictor, corrector, n_steps_each):
    """How many updates (callback calls, and network evaluations) a run of :func:`pc_sampler` makes."""
    return n_levels * ((predictor != "none") + (n_steps_each if corrector != "none" else 0))


def langevin_step_size(score, noise, snr):
    """score_sde's corrector step ``2 (snr ||z|| / ||s||)^2`` per example (B,) from score and noise (B, *D)."""
    score_norm = score.flatten(1).norm(dim=1)
    noise_norm = noise.flatten(1).norm(dim=1)
    return 2 * (snr * noise_norm / score_norm) ** 2


@torch.no_grad()
def pc_sampler(score_fn, x, sigmas, *, predictor="reverse_diffusion", corrector="langevin", snr=0.16,
               n_steps_each=1, denoise=False, callback=None, project=None):
    """Predictor-corrector sampling (see the module docstring) with a conditional ``score_fn(x, labels)``.

    x: (B, *D) initial state (score_sde: a draw of the prior N(0, sigma_1^2 I); see sampling/methods.py);
    sigmas: (L,) descending.  ``callback(info)`` after every update with ``{"i", "x", "level", "sigma", "nfe"}``
    (nfe: network evaluations so far).  ``project(x, level, sigma)`` when a level starts and after every update, and
    ``project(x, None, 0.0)`` on the denoised result.  Returns the final state (B, *D).
    """
    if predictor not in PREDICTORS or corrector not in CORRECTORS:
        raise ValueError(f"unknown predictor {predictor!r} or corrector {corrector!r}")
    sigma_list = host_sigmas(sigmas)
    step, x_mean = 0, x

    def update(new_x, c, sigma):
        nonlocal step
        if project is not None:
            new_x = project(new_x, c, sigma)
        if callback is not None:
            callback({"i": step, "x": new_x, "level": c, "sigma": sigma, "nfe": step + 1})
        step += 1
        return new_x

    for c, sigma in enumerate(sigma_list):
        labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        if project is not None:
            x = project(x, c, sigma)
        if corrector == "langevin":
            for _ in range(n_steps_each):
                score = score_fn(x, labels)
                noise = torch.randn_like(x)
                eps = append_dims(langevin_step_size(score, noise, snr), x.ndim).to(x.dtype)
                x_mean = x + eps * score
                x = update(x_mean + (2 * eps).sqrt() * noise, c, sigma)
        if predictor == "reverse_diffusion":
            following = sigma_list[c + 1] if c + 1 < len(sigma_list) else 0.0
            variance = sigma ** 2 - following ** 2
            x_mean = x + variance * score_fn(x, labels)
            x = update(x_mean + variance ** 0.5 * torch.randn_like(x), c, sigma)
    if denoise:
        x = x_mean if project is None else project(x_mean, None, 0.0)
    return x
