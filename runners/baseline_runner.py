"""BaselineRunner: the single-noise-level baseline of Song & Ermon 2019 (Sec. 3 and 4.2 discussion).

An unconditional RefineNet s_theta(x) is trained with denoising score matching (Eq. 5 with one sigma,
``model.sigma``, official 0.01) and sampled with plain Langevin dynamics (``sampling.n_steps`` steps of size
``sampling.step_lr`` from U[0, 1)).  With one small sigma the score is only learned near the data, so plain Langevin
from noise mixes poorly: this is the failure that motivates the annealed NCSN.
"""
from pathlib import Path

import torch

from datasets import data_transform, inverse_data_transform
from evaluation.export import to_uint8_nhwc
from losses import dsm_per_example, dsm_score_estimation
from models import RefineNetDilated
from runners.base import Runner
from runners.evaluate import evaluate_run
from runners.outputs import prepare_output_folder, sample_to_folder
from sampling import anneal_langevin_dynamics, unconditional
from training.precision import to_layout
from training.loop import Objective, train_loop
from training.setup import setup_training


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

    def train(self):
        cfg = self.config
        setup = setup_training(self.args, cfg, self.device, self.new_model(training=True))
        train_loop(setup, baseline_objective(cfg))

    def evaluate(self):
        """--eval: eval.n_samples samples of plain Langevin dynamics, scored against the run's data set."""
        cfg, d, smp = self.config, self.config.data, self.config.sampling
        model, state = self.trained_model(Path(self.args.log) / "checkpoint.pth")

        def draw(size):
            x = torch.rand(size, d.channels, d.image_size, d.image_size, device=self.device)          # U[0, 1)
            x = anneal_langevin_dynamics(unconditional(self.score_fn(model)), to_layout(x, cfg.compute),
                                         [cfg.model.sigma], n_steps_each=smp.n_steps, step_lr=smp.step_lr)
            return to_uint8_nhwc(inverse_data_transform(x, d))
        evaluate_run(self, draw, state, {"method": "langevin", "n_steps": smp.n_steps, "step_lr": smp.step_lr})

    def test(self):
        """Plain Langevin dynamics from U[0, 1): samples.png, samples.pth (N, C, H, W) and movie.gif in ``-o``."""
        cfg, args, d, smp = self.config, self.args, self.config.data, self.config.sampling
        model, _ = self.trained_model(Path(args.log) / "checkpoint.pth")
        folder = prepare_output_folder(args.image_folder, args.overwrite)
        x = torch.rand(smp.n_samples, d.channels, d.image_size, d.image_size, device=self.device)   # init U[0, 1)
        x, score = to_layout(x, cfg.compute), unconditional(self.score_fn(model))

        def run(x0, callback):      # plain Langevin: the one sampler with the single level model.sigma
            return anneal_langevin_dynamics(score, x0, [cfg.model.sigma], n_steps_each=smp.n_steps,
                                            step_lr=smp.step_lr, callback=callback)

        sample_to_folder(run, x, total=smp.n_steps, folder=folder, data_cfg=d, sampling_cfg=smp,
                         nrow=max(1, round(smp.n_samples ** 0.5)), desc="Langevin")
