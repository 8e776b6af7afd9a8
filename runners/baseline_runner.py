"""BaselineRunner: the single-noise-level baseline of Song & Ermon 2019 (Sec. 3 and 4.2 discussion).

An unconditional RefineNet s_theta(x) is trained with denoising score matching (Eq. 5 with one sigma,
``model.sigma``, official 0.01) and sampled with plain Langevin dynamics (``sampling.n_steps`` steps of size
``sampling.step_lr`` from U[0, 1)).  With one small sigma the score is only learned near the data, so plain Langevin
from noise mixes poorly: this is the failure that motivates the annealed NCSN.
"""
import torch

from datasets import data_transform
from errors import ConfigError, UserError
from evaluation.held_out import HeldOutLoss, fixed_transform
from losses import dsm_per_example, dsm_score_estimation
from models import RefineNetDilated
from runners.base import Runner
from sampling import unconditional
from sampling.from_config import plain_langevin
from training.loop import Objective


def baseline_objective(config):
    """DSM at the one level ``model.sigma`` on dequantised images (official); the test loss is the same DSM."""
    sigma = config.model.sigma

    def loss_fn(model, X):                                  # X: (B, C, H, W) in [0, 1]
        return dsm_per_example(model, data_transform(X, config.data), sigma=sigma)

    def test_fn(model, X):
        with torch.no_grad():
            return dsm_score_estimation(model, data_transform(X, config.data), sigma=sigma)

    return Objective(loss_fn=loss_fn, test_fn=test_fn, test_name="test_dsm_loss")


class BaselineRunner(Runner):
    distributed = True

    @staticmethod
    def build_model(config):
        """The official ``RefineNetDilated`` (same state-dict keys as the official baseline checkpoint)."""
        d, m = config.data, config.model
        return RefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf, num_classes=m.num_classes,
                                logit_transform=d.logit_transform)

    def objective(self):
        return baseline_objective(self.config)

    def sampler(self):
        """Plain Langevin dynamics at ``model.sigma`` from U[0, 1); the annealed samplers of ``sampling.method`` need
        the NCSN's levels."""
        if self.config.sampling.method != "langevin":
            raise ConfigError(f"sampling.method {self.config.sampling.method} needs the noise levels of the "
                              f"AnnealRunner; the BaselineRunner samples with plain Langevin dynamics "
                              f"(sampling.n_steps, sampling.step_lr)", key="sampling.method")
        return plain_langevin(self.config, self.config.model.sigma, self.device)

    def score_fn(self, model):
        """The unconditional network as the samplers call a score, ``s(x, labels)`` (the labels are ignored)."""
        return unconditional(super().score_fn(model))

    def held_out_loss(self, objective=None):
        """DSM at the one ``model.sigma``, unweighted."""
        if objective == "ssm":
            raise UserError("model comparison: the BaselineRunner is scored with DSM at model.sigma only")
        if objective not in (None, "dsm"):
            raise UserError(f"model comparison: objective must be dsm or ssm, got {objective!r}")
        return HeldOutLoss(name="DSM", algo="dsm", conditional=False, sigmas=[self.config.model.sigma],
                           weight_power=0.0, n_particles=1,
                           transform=fixed_transform(True, self.config.data.logit_transform))
