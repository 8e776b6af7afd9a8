"""BaselineRunner: the single-noise-level baseline of Song & Ermon 2019 (Sec. 3 and 4.2 discussion).

An unconditional RefineNet s_theta(x) is trained with denoising score matching (Eq. 5 with one sigma,
``model.sigma``, official 0.01) and sampled with plain Langevin dynamics (``sampling.n_steps`` steps of size
``sampling.step_lr`` from U[0, 1)).  With one small sigma the score is only learned near the data, so plain Langevin
from noise mixes poorly: this is the failure that motivates the annealed NCSN.
"""
from pathlib import Path

import torch

from configs import ConfigError
from datasets import data_transform
from losses import dsm_per_example, dsm_score_estimation
from models import RefineNetDilated, langevin_dynamics
from runners.common import (load_trained, prepare_output_folder, sample_to_folder,
                            setup_training, train_loop)


def build_baseline(config):
    """The official ``RefineNetDilated`` (same state-dict keys as the official baseline checkpoint)."""
    d, m = config.data, config.model
    try:
        return RefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf, num_classes=m.num_classes,
                                logit_transform=d.logit_transform)
    except ValueError as e:
        raise ConfigError(f"RefineNetDilated cannot be built from this config: {e}") from e


class BaselineRunner:
    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device

    def train(self):
        cfg = self.config
        sigma = cfg.model.sigma

        def loss_fn(model, X):                                  # X: (B, C, H, W) in [0, 1]
            return dsm_per_example(model, data_transform(X, cfg.data), sigma=sigma), None

        def test_fn(model, X):
            with torch.no_grad():
                return dsm_score_estimation(model, data_transform(X, cfg.data), sigma=sigma)

        s = setup_training(self.args, cfg, self.device, build_baseline(cfg))
        train_loop(loss_fn=loss_fn, test_fn=test_fn, test_name="test_dsm_loss", **s)

    def test(self):
        """Plain Langevin dynamics from U[0, 1): samples.png, samples.pth (N, C, H, W) and movie.gif in ``-o``."""
        cfg, args, d, smp = self.config, self.args, self.config.data, self.config.sampling
        path = Path(args.log) / "checkpoint.pth"
        model, _ = load_trained(build_baseline(cfg), path, self.device)
        folder = prepare_output_folder(args.image_folder, args.overwrite)

        x = torch.rand(smp.n_samples, d.channels, d.image_size, d.image_size, device=self.device)   # init U[0, 1)

        def sampler(x0, callback):
            return langevin_dynamics(model, x0, smp.n_steps, smp.step_lr, callback=callback)

        sample_to_folder(sampler, x, total=smp.n_steps, folder=folder, data_cfg=d, sampling_cfg=smp,
                         nrow=max(1, round(smp.n_samples ** 0.5)), desc="Langevin")
