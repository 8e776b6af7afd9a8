"""AnnealRunner: the NCSN (Song & Ermon 2019, Sec. 4): annealed DSM/SSM training, annealed Langevin sampling."""
import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from datasets import data_transform, get_dataset, inverse_data_transform
from errors import UserError
from losses import anneal_dsm_per_example, anneal_dsm_score_estimation, anneal_sliced_per_example
from models import CondRefineNetDilated
from evaluation.export import to_uint8_nhwc
from runners.base import Runner
from runners.evaluate import evaluate_run
from runners.outputs import prepare_output_folder, sample_to_folder, write_preview
from runners.sampler_config import bpd_of_test_set, check_bpd, sampler_from_config
from sampling import anneal_langevin_dynamics, geometric_sigmas, inpainting
from sampling.masks import inpainting_mask
from training.loop import Objective, train_loop
from training.precision import to_layout
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


PROGRESS_NAMES = {"langevin": "annealed Langevin", "pc": "predictor-corrector", "ode": "probability-flow ODE"}


class AnnealRunner(Runner):
    distributed = True

    @staticmethod
    def build_model(config):
        d, m = config.data, config.model
        # model.scale_by_sigma: the network divides its output by sigma_y, so training, test losses, sampling, --eval,
        # --compare and inpainting all see the same s(x, i) = net(x, i) / sigma_i
        sigmas = make_sigmas(config, None) if m.scale_by_sigma else None
        return CondRefineNetDilated(channels=d.channels, image_size=d.image_size, ngf=m.ngf,
                                    num_classes=m.num_classes, logit_transform=d.logit_transform, sigmas=sigmas)

    def train(self):
        cfg = self.config
        setup = setup_training(self.args, cfg, self.device, self.new_model(training=True))
        objective = ncsn_objective(cfg, make_sigmas(cfg, self.device))
        train_loop(setup, dataclasses.replace(objective, preview=self.preview))

    def preview(self, model, step, writer):
        """A few samples of a short annealed chain (``training.preview_*``): previews/step_<step>.png, tensorboard."""
        cfg, d, t = self.config, self.config.data, self.config.training
        x = torch.rand(t.preview_samples, d.channels, d.image_size, d.image_size, device=self.device)
        x = anneal_langevin_dynamics(self.score_fn(model), to_layout(x, cfg.compute),
                                     make_sigmas(cfg, self.device, dtype=torch.float64),
                                     n_steps_each=t.preview_steps_each, step_lr=cfg.sampling.step_lr)
        write_preview(inverse_data_transform(x, d), Path(self.args.log) / "previews" / f"step_{step}.png", writer,
                      step)

    def evaluate(self):
        """--eval: eval.n_samples samples with the run's sampler settings (sampling.method), scored against its data
        set; with eval.bpd also bits/dim of test images (metrics.json)."""
        cfg, d = self.config, self.config.data
        check_bpd(cfg)
        model, state = self.trained_model(Path(self.args.log) / "checkpoint.pth")
        score = self.score_fn(model)
        sigmas = make_sigmas(cfg, self.device, dtype=torch.float64)
        choice = sampler_from_config(cfg, len(sigmas))
        settings = {**choice.settings, "sigmas": [float(v) for v in sigmas]}
        nfes = []

        def draw(size):
            shape = (d.channels, d.image_size, d.image_size)
            last = {}
            x = choice.sample(score, to_layout(choice.init(size, shape, self.device), cfg.compute), sigmas,
                              callback=last.update)
            nfes.append(last.get("nfe"))
            if cfg.sampling.method == "ode":
                settings["nfe_per_batch"] = nfes         # recorded after the export's manifest was written
                logging.info("probability-flow ODE: %s network evaluations for a batch of %d", last.get("nfe"), size)
            return to_uint8_nhwc(inverse_data_transform(x, d))
        metrics = evaluate_run(self, draw, state, settings)
        if metrics is not None and cfg.eval.bpd:
            metrics.update(bpd_of_test_set(cfg, model, sigmas, self.args.run, self.args.seed, self.device))
            path = Path(self.args.image_folder) / "metrics.json"
            path.write_text(json.dumps(metrics, indent=2) + "\n")

    def test(self):
        cfg, args, d, smp = self.config, self.args, self.config.data, self.config.sampling
        model, _ = self.trained_model(Path(args.log) / "checkpoint.pth")
        score = self.score_fn(model)
        folder = prepare_output_folder(args.image_folder, args.overwrite)
        sigmas = make_sigmas(cfg, self.device, dtype=torch.float64)   # step sizes in float64, as official
        nrow = max(1, round(smp.n_samples ** 0.5))
        shape = (d.channels, d.image_size, d.image_size)

        choice = sampler_from_config(cfg, len(sigmas))
        sampler, grid = choice.sample, None
        if smp.inpainting:
            # each of `nrow` test images is completed `nrow` times where sampling.inpainting_mask hides it (official:
            # the left half of the columns observed); the mask is built without the global random state
            _, test = get_dataset(d, args.run)
            if nrow > len(test):
                raise UserError(f"inpainting completes sqrt(sampling.n_samples) = {nrow} test images, but the "
                                f"{d.dataset} test set has {len(test)}; lower sampling.n_samples")
            refs = torch.stack([test[i][0] for i in range(nrow)]).to(self.device)          # (k, C, H, W)
            reference = refs.repeat_interleave(nrow, dim=0)                               # (k*k, C, H, W)
            mask = inpainting_mask(smp.inpainting_mask, shape, smp.inpainting_fraction, seed=args.seed)
            mask = mask.to(reference).expand_as(reference)
            sampler = inpainting(choice.sample, mask, reference)
            mask_cpu, refs_cpu = mask[0].cpu(), refs.cpu()
            masked = refs_cpu * mask_cpu + 0.5 * (1 - mask_cpu)                           # hidden: mid grey

            def inpainting_grid(samples):   # one row per reference: the image, the masked input, its completions
                rows = torch.cat([refs_cpu.unsqueeze(1), masked.unsqueeze(1), samples.view(nrow, nrow, *shape)], 1)
                return rows.flatten(0, 1), nrow + 2
            grid = inpainting_grid
        n = nrow * nrow if smp.inpainting else smp.n_samples
        x = to_layout(choice.init(n, shape, self.device), cfg.compute)   # langevin: U[0, 1) (official); pc, ode: the prior

        def run(x0, callback):
            last = {}
            x = sampler(score, x0, sigmas, callback=lambda info: (last.update(info), callback(info)))
            if "nfe" in last:
                logging.info("%s: %s network evaluations", choice.settings["method"], last["nfe"])
            return x

        logging.info("sampling with %s", choice.settings)
        samples = sample_to_folder(run, x, total=choice.total, folder=folder, data_cfg=d,
                                   sampling_cfg=smp, nrow=nrow, desc=PROGRESS_NAMES[smp.method],
                                   name="inpainting" if smp.inpainting else "samples", grid=grid)
        if smp.inpainting:
            errors = {"mask": smp.inpainting_mask, "fraction": smp.inpainting_fraction, "seed": args.seed,
                      **inpainting_errors(samples.view(nrow, nrow, *shape), refs_cpu, mask_cpu)}
            (folder / "inpainting.json").write_text(json.dumps(errors, indent=2) + "\n")
            logging.info("inpainting (%s mask): MSE %.5f, PSNR %s dB on the hidden pixels; wrote %s",
                         smp.inpainting_mask, errors["mse"] if errors["mse"] is not None else float("nan"),
                         errors["psnr"], folder / "inpainting.json")


def _psnr(mse):
    """PSNR in dB of images in [0, 1]: 10 log10(1 / MSE); None (JSON null) where the MSE is 0 or undefined."""
    return None if mse is None or mse <= 0 else 10 * math.log10(1 / mse)


def inpainting_errors(completions, refs, mask):
    """MSE and PSNR of ``completions`` (k, m, C, H, W) of ``refs`` (k, C, H, W) on the pixels that ``mask`` (C, H, W,
    1 = observed) hides; images in [0, 1].  Per reference (over its m completions, and for each completion) and
    overall (over every hidden value of every completion; PSNR from that MSE).  MSEs are None when nothing is hidden.
    """
    hidden = (1 - mask).to(torch.float64)
    n_hidden = float(hidden.sum())
    sq = (completions.to(torch.float64) - refs.to(torch.float64).unsqueeze(1)) ** 2 * hidden     # (k, m, C, H, W)
    per_completion = sq.flatten(2).sum(2) / n_hidden if n_hidden else None                     # (k, m)
    rows = []
    for i in range(completions.shape[0]):
        mse = float(per_completion[i].mean()) if n_hidden else None
        each = [float(v) for v in per_completion[i]] if n_hidden else []
        rows.append({"reference": i, "mse": mse, "psnr": _psnr(mse), "mse_per_completion": each,
                     "psnr_per_completion": [_psnr(v) for v in each]})
    mse = float(per_completion.mean()) if n_hidden else None
    return {"hidden_values": int(n_hidden), "observed_values": int(mask.numel() - n_hidden),
            "mse": mse, "psnr": _psnr(mse), "per_reference": rows}
