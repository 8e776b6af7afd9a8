"""AnnealRunner: the NCSN (Song & Ermon 2019, Sec. 4): annealed DSM/SSM training, annealed Langevin sampling."""
from pathlib import Path

import torch

from datasets import data_transform, get_dataset
from losses import anneal_dsm_per_example, anneal_dsm_score_estimation, anneal_sliced_per_example
from models import CondRefineNetDilated, anneal_langevin_dynamics, geometric_sigmas
from runners.common import (load_trained, prepare_output_folder, sample_to_folder,
                            setup_training, train_loop)


def build_ncsn(config):
    d, m = config.data, config.model
    return CondRefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf, num_classes=m.num_classes,
                                logit_transform=d.logit_transform)


def make_sigmas(config, device, dtype=torch.float32):
    m = config.model
    return geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_classes, dtype=dtype, device=device)


class AnnealRunner:
    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device

    def train(self):
        cfg = self.config
        sigmas = make_sigmas(cfg, self.device)
        t = cfg.training

        def loss_fn(model, X):                                  # X: (B, C, H, W) in [0, 1]
            X = data_transform(X, cfg.data)
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)   # one level per example
            if t.algo == "dsm":
                return anneal_dsm_per_example(model, X, labels, sigmas, t.anneal_power), labels
            return anneal_sliced_per_example(model, X, labels, sigmas, n_particles=t.n_particles)

        def test_fn(model, X):                                  # always DSM, as official
            X = data_transform(X, cfg.data)
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
            with torch.no_grad():
                return anneal_dsm_score_estimation(model, X, labels, sigmas, t.anneal_power)

        s = setup_training(self.args, cfg, self.device, build_ncsn(cfg))
        train_loop(loss_fn=loss_fn, test_fn=test_fn, test_name="test_dsm_loss", sigmas=sigmas, **s)

    def test(self):
        cfg, args, d, smp = self.config, self.args, self.config.data, self.config.sampling
        path = Path(args.log) / "checkpoint.pth"
        model, _ = load_trained(build_ncsn(cfg), path, self.device)
        folder = prepare_output_folder(args.image_folder, args.overwrite)
        sigmas = make_sigmas(cfg, self.device, dtype=torch.float64)   # step sizes in float64, as official
        nrow = max(1, round(smp.n_samples ** 0.5))
        shape = (d.channels, d.image_size, d.image_size)

        mask = reference = None
        if smp.inpainting:
            # each of `nrow` test images is completed `nrow` times; the left half of the columns is observed
            _, test = get_dataset(d, args.run)
            refs = torch.stack([test[i][0] for i in range(nrow)]).to(self.device)          # (k, C, H, W)
            reference = refs.repeat_interleave(nrow, dim=0)                               # (k*k, C, H, W)
            mask = torch.zeros_like(reference)
            mask[..., : d.image_size // 2] = 1
            n = reference.shape[0]
        else:
            n = smp.n_samples
        x = torch.rand(n, *shape, device=self.device)                                     # init U[0, 1)

        def sampler(x0, callback):
            return anneal_langevin_dynamics(model, x0, sigmas, smp.n_steps_each, smp.step_lr, callback=callback,
                                            denoise=smp.denoise, mask=mask, reference=reference)

        def inpainting_grid(samples):                       # one row per reference: the image, then its completions
            rows = torch.cat([refs.cpu().unsqueeze(1), samples.view(nrow, nrow, *shape)], dim=1)
            return rows.flatten(0, 1), nrow + 1

        sample_to_folder(sampler, x, total=len(sigmas) * smp.n_steps_each, folder=folder, data_cfg=d,
                         sampling_cfg=smp, nrow=nrow, desc="annealed Langevin",
                         name="inpainting" if smp.inpainting else "samples",
                         grid=inpainting_grid if smp.inpainting else None)
