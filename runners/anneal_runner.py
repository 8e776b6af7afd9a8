"""AnnealRunner: the NCSN (Song & Ermon 2019, Sec. 4): annealed DSM/SSM training, annealed Langevin sampling."""
from pathlib import Path

import torch

from datasets import data_transform, get_dataset, inverse_data_transform
from errors import UserError
from losses import anneal_dsm_per_example, anneal_dsm_score_estimation, anneal_sliced_per_example
from models import CondRefineNetDilated
from evaluation.export import to_uint8_nhwc
from runners.base import Runner
from runners.evaluate import evaluate_run
from runners.outputs import prepare_output_folder, sample_to_folder
from sampling import anneal_langevin_dynamics, geometric_sigmas, inpainting
from training.loop import Objective, train_loop
from training.setup import setup_training


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

    @staticmethod
    def build_model(config):
        d, m = config.data, config.model
        return CondRefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf,
                                    num_classes=m.num_classes, logit_transform=d.logit_transform)

    def train(self):
        cfg = self.config
        setup = setup_training(self.args, cfg, self.device, self.new_model(training=True))
        train_loop(setup, ncsn_objective(cfg, make_sigmas(cfg, self.device)))

    def evaluate(self):
        """--eval: eval.n_samples samples with the run's sampler settings, scored against its data set."""
        cfg, d, smp = self.config, self.config.data, self.config.sampling
        model, state = self.trained_model(Path(self.args.log) / "checkpoint.pth")
        sigmas = make_sigmas(cfg, self.device, dtype=torch.float64)

        def draw(size):
            x = torch.rand(size, d.channels, d.image_size, d.image_size, device=self.device)          # U[0, 1)
            x = anneal_langevin_dynamics(model, x, sigmas, n_steps_each=smp.n_steps_each, step_lr=smp.step_lr,
                                         denoise=smp.denoise)
            return to_uint8_nhwc(inverse_data_transform(x, d))
        evaluate_run(self, draw, state, {"method": "annealed_langevin", "n_steps_each": smp.n_steps_each,
                                         "step_lr": smp.step_lr, "denoise": smp.denoise,
                                         "sigmas": [float(v) for v in sigmas]})

    def test(self):
        cfg, args, d, smp = self.config, self.args, self.config.data, self.config.sampling
        model, _ = self.trained_model(Path(args.log) / "checkpoint.pth")
        folder = prepare_output_folder(args.image_folder, args.overwrite)
        sigmas = make_sigmas(cfg, self.device, dtype=torch.float64)   # step sizes in float64, as official
        nrow = max(1, round(smp.n_samples ** 0.5))
        shape = (d.channels, d.image_size, d.image_size)

        sampler, grid = anneal_langevin_dynamics, None
        if smp.inpainting:
            # each of `nrow` test images is completed `nrow` times; the left half of the columns is observed
            _, test = get_dataset(d, args.run)
            if nrow > len(test):
                raise UserError(f"inpainting completes sqrt(sampling.n_samples) = {nrow} test images, but the "
                                f"{d.dataset} test set has {len(test)}; lower sampling.n_samples")
            refs = torch.stack([test[i][0] for i in range(nrow)]).to(self.device)          # (k, C, H, W)
            reference = refs.repeat_interleave(nrow, dim=0)                               # (k*k, C, H, W)
            mask = torch.zeros_like(reference)
            mask[..., : d.image_size // 2] = 1
            sampler = inpainting(anneal_langevin_dynamics, mask, reference)

            def inpainting_grid(samples):                   # one row per reference: the image, then its completions
                rows = torch.cat([refs.cpu().unsqueeze(1), samples.view(nrow, nrow, *shape)], dim=1)
                return rows.flatten(0, 1), nrow + 1
            grid = inpainting_grid
        n = nrow * nrow if smp.inpainting else smp.n_samples
        x = torch.rand(n, *shape, device=self.device)                                     # init U[0, 1)

        def run(x0, callback):
            return sampler(model, x0, sigmas, n_steps_each=smp.n_steps_each, step_lr=smp.step_lr,
                           denoise=smp.denoise, callback=callback)

        sample_to_folder(run, x, total=len(sigmas) * smp.n_steps_each, folder=folder, data_cfg=d,
                         sampling_cfg=smp, nrow=nrow, desc="annealed Langevin",
                         name="inpainting" if smp.inpainting else "samples", grid=grid)
