"""ScoreNetRunner: Figure 1 of Song & Ermon 2019 -- score matching on raw data is unstable, on slightly noisy data not.

A ResScore network s_theta(x) is trained with sliced score matching (``training.algo: ssm``, Song et al. 2019, with
variance reduction) on images perturbed by ``training.noise_std`` * N(0, I) (0 = raw data), or with denoising score
matching at sigma = noise_std (``algo: dsm``).  As official there is no dequantisation.  Tensorboard scalars ``loss``
and ``sigma`` every step, ``test_loss`` every ``training.test_freq`` steps; the same losses also go to
``<run>/logs/<doc>/losses.csv`` (step,tag,value) so that the figure needs no tensorboard.

``--test`` evaluates the checkpoint's loss over the whole test set and draws Figure 1 from every run under
``<run>/logs/`` that has a ``losses.csv`` (one panel per run, ordered by noise_std).
"""
import torch

from commands.figure1 import figure1
from datasets import data_transform
from errors import ConfigError, UserError
from evaluation.held_out import HeldOutLoss, fixed_transform
from losses import dsm_per_example, sliced_per_example
from models import ResScore
from runners.base import Runner
from training.loop import Objective


def scorenet_loss(model, X, config):
    """The official ScoreNetRunner objective on a batch X (B, C, H, W) in [0, 1].

    Returns (per_example, None): (n_particles * B,) for SSM, (B,) for DSM.  SSM differentiates the network with
    respect to its input, so this must not run under ``no_grad``.
    """
    t = config.training
    X = data_transform(X, config.data, dequantize=False)        # only the optional logit, as official
    if t.algo == "ssm":
        X = X + torch.randn_like(X) * t.noise_std               # noise_std 0: the raw data
        return sliced_per_example(model, X, n_particles=t.n_particles)
    return dsm_per_example(model, X, sigma=t.noise_std)


class ScoreNetRunner(Runner):
    @staticmethod
    def build_model(config):
        d, m = config.data, config.model
        return ResScore(channels=d.channels, nef=m.nef, ndf=m.ndf, logit_transform=d.logit_transform,
                        image_size=d.image_size)

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        t = config.training
        if t.algo == "dsm" and t.noise_std == 0:
            raise ConfigError("training.algo dsm needs training.noise_std > 0 (it is the DSM sigma)")

    loss_log = True             # losses.csv: what Figure 1 is drawn from
    flows = {"test": figure1}   # --test: the checkpoint's test loss and Figure 1 (commands/figure1.py)

    def objective(self):
        cfg = self.config

        def loss_fn(model, X):
            return scorenet_loss(model, X, cfg)

        def test_fn(model, X):          # with gradients on: SSM needs d s(x) / dx (official: also for the test loss)
            return scorenet_loss(model, X, cfg)[0].mean().item()

        return Objective(loss_fn=loss_fn, test_fn=test_fn, test_name="test_loss",
                         extra_scalars={"sigma": cfg.training.noise_std})

    def held_out_loss(self, objective=None):
        """Its own objective (SSM or DSM) at ``training.noise_std``, without dequantisation (as it trains)."""
        t = self.config.training
        if objective not in (None, "dsm", "ssm"):
            raise UserError(f"model comparison: objective must be dsm or ssm, got {objective!r}")
        algo = objective or t.algo
        if algo == "dsm" and t.noise_std == 0:
            raise UserError("model comparison: DSM needs training.noise_std > 0 (it is the DSM sigma)")
        return HeldOutLoss(name=algo.upper(), algo=algo, conditional=False, sigmas=[t.noise_std], weight_power=0.0,
                           n_particles=t.n_particles, transform=fixed_transform(False, self.config.data.logit_transform))
