"""AnnealRunner: the NCSN (Song & Ermon 2019, Sec. 4): annealed DSM/SSM training, annealed Langevin sampling (or
``sampling.method``'s sampler), the annealed DSM (or SSM) held-out loss, bits/dim through the probability-flow ODE."""
import dataclasses
from pathlib import Path

import torch

from datasets import data_transform, inverse_data_transform
from errors import UserError
from evaluation.held_out import HeldOutLoss, fixed_transform
from losses import anneal_dsm_per_example, anneal_dsm_score_estimation, anneal_sliced_per_example
from models import CondRefineNetDilated
from reports.outputs import write_preview
from runners.base import Runner
from sampling import geometric_sigmas
from sampling.from_config import sampler_from_config
from training.loop import Objective


def make_sigmas(config, device, dtype=torch.float32):
    m = config.model
    return geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_classes, dtype=dtype, device=device)


def ncsn_objective(config, sigmas):
    """Annealed DSM (or SSM, ``training.algo``) at one uniformly drawn level per example; the test loss is always
    DSM, as official.  Inputs are images in [0, 1], transformed here as in training."""
    t = config.training

    def loss_fn(model, X):                                  # X: (B, C, H, W) in [0, 1]
        X = data_transform(X, config.data)
        labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)   # one level per example
        if t.algo == "dsm":
            return anneal_dsm_per_example(model, X, labels, sigmas, t.anneal_power)
        return anneal_sliced_per_example(model, X, labels, sigmas, n_particles=t.n_particles)

    def test_fn(model, X):
        X = data_transform(X, config.data)
        labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
        with torch.no_grad():
            return anneal_dsm_score_estimation(model, X, labels, sigmas, t.anneal_power)

    return Objective(loss_fn=loss_fn, test_fn=test_fn, test_name="test_dsm_loss", sigmas=sigmas)


class AnnealRunner(Runner):
    distributed = True
    likelihood = True           # eval.bpd: the network is a score at every level of a geometric schedule

    @staticmethod
    def build_model(config):
        d, m = config.data, config.model
        # model.scale_by_sigma: the network divides its output by sigma_y, so training, test losses, sampling, --eval,
        # --compare and inpainting all see the same s(x, i) = net(x, i) / sigma_i
        sigmas = make_sigmas(config, None) if m.scale_by_sigma else None
        return CondRefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf,
                                    num_classes=m.num_classes, logit_transform=d.logit_transform, sigmas=sigmas)

    def objective(self):
        objective = ncsn_objective(self.config, make_sigmas(self.config, self.device))
        return dataclasses.replace(objective, preview=self.preview)

    def sampler(self):
        """``sampling.method`` through the run's levels, step sizes in float64 as official."""
        return sampler_from_config(self.config, make_sigmas(self.config, self.device, dtype=torch.float64),
                                   self.device)

    def preview(self, model, step, writer):
        """A few samples of a short annealed chain (``training.preview_*``): previews/step_<step>.png, tensorboard."""
        cfg, t = self.config, self.config.training
        chain = sampler_from_config(cfg, make_sigmas(cfg, self.device, dtype=torch.float64), self.device,
                                    method="langevin", n_steps_each=t.preview_steps_each, denoise=False)
        x = chain.run(self.score_fn(model), chain.start(t.preview_samples))
        write_preview(inverse_data_transform(x, cfg.data), Path(self.ctx.log) / "previews" / f"step_{step}.png",
                      writer, step)

    def held_out_loss(self, objective=None):
        """Annealed DSM over the L levels weighted by sigma^anneal_power (Eq. 6), or annealed SSM weighted by
        sigma^2 for a ``training.algo: ssm`` run (``objective`` forces either)."""
        t, d = self.config.training, self.config.data
        if objective not in (None, "dsm", "ssm"):
            raise UserError(f"model comparison: objective must be dsm or ssm, got {objective!r}")
        algo = objective or t.algo
        return HeldOutLoss(name=f"annealed {algo.upper()}", algo=algo, conditional=True,
                           sigmas=make_sigmas(self.config, torch.device("cpu")),
                           weight_power=t.anneal_power if algo == "dsm" else 2.0, n_particles=t.n_particles,
                           transform=fixed_transform(True, d.logit_transform))
