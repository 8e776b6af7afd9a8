"""ScoreNetRunner: Figure 1 of Song & Ermon 2019 -- score matching on raw data is unstable, on slightly noisy data not.

A ResScore network s_theta(x) is trained with sliced score matching (``training.algo: ssm``, Song et al. 2019, with
variance reduction) on images perturbed by ``training.noise_std`` * N(0, I) (0 = raw data), or with denoising score
matching at sigma = noise_std (``algo: dsm``).  As official there is no dequantisation.  Tensorboard scalars ``loss``
and ``sigma`` every step, ``test_loss`` every ``training.test_freq`` steps; the same losses also go to
``<run>/logs/<doc>/losses.csv`` (step,tag,value) so that the figure needs no tensorboard.

``--test`` evaluates the checkpoint's loss over the whole test set and draws Figure 1 from every run under
``<run>/logs/`` that has a ``losses.csv`` (one panel per run, ordered by noise_std).
"""
import dataclasses
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs import load_config
from datasets import data_transform, get_dataset
from errors import ConfigError, UserError
from losses import dsm_per_example, sliced_per_example
from models import ResScore
from runners.base import Runner
from runners.figures import plot_figure1
from runners.outputs import LOSS_LOG, LossLog, prepare_output_folder, read_loss_log
from training.loop import Objective, train_loop
from training.setup import setup_training


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


def find_loss_logs(run_dir):
    """[(doc, config, log)] for every run under ``<run>/logs/`` with a config.yml and a losses.csv, by noise_std."""
    runs = []
    for folder in sorted(Path(run_dir, "logs").glob("*/")):
        if (folder / LOSS_LOG).is_file() and (folder / "config.yml").is_file():
            try:
                runs.append((folder.name, load_config(folder / "config.yml"), read_loss_log(folder / LOSS_LOG)))
            except UserError as e:                    # another run's broken files do not stop this one's test
                logging.warning("left out of the figure: %s", e)
    return sorted(runs, key=lambda r: (r[1].training.noise_std, r[0]))


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

    def train(self):
        cfg, t = self.config, self.config.training

        def loss_fn(model, X):
            return scorenet_loss(model, X, cfg)

        def test_fn(model, X):          # with gradients on: SSM needs d s(x) / dx (official: also for the test loss)
            return scorenet_loss(model, X, cfg)[0].mean().item()

        setup = setup_training(self.args, cfg, self.device, self.new_model(training=True))
        writer = LossLog(setup.writer, Path(self.args.log) / LOSS_LOG, setup.start_step)
        train_loop(dataclasses.replace(setup, writer=writer),                 # train_loop closes the writer
                   Objective(loss_fn=loss_fn, test_fn=test_fn, test_name="test_loss",
                             extra_scalars={"sigma": t.noise_std}))

    def test(self):
        """Test loss of the checkpoint over the whole test set (``test_loss.json``) and ``figure1.png`` in ``-o``."""
        cfg, args = self.config, self.args
        path = Path(args.log) / "checkpoint.pth"
        model, state = self.trained_model(path)
        folder = prepare_output_folder(args.image_folder, args.overwrite)

        _, test = get_dataset(cfg.data, args.run)
        loader = DataLoader(test, batch_size=cfg.training.batch_size, shuffle=False,
                            num_workers=cfg.training.num_workers)
        total, count = 0.0, 0
        for X, _ in tqdm(loader, desc="test loss", unit="batch", dynamic_ncols=True, mininterval=1.0):
            X = X.to(self.device)
            per_example, _ = scorenet_loss(model, X, cfg)             # SSM: gradients with respect to X, no no_grad
            total += per_example.mean().item() * X.shape[0]           # batch mean weighted by batch size
            count += X.shape[0]
        result = {"test_loss": total / count, "n_examples": count, "algo": cfg.training.algo,
                  "noise_std": cfg.training.noise_std, "dataset": cfg.data.dataset, "step": state.get("step"),
                  "checkpoint": str(path)}
        (folder / "test_loss.json").write_text(json.dumps(result, indent=2) + "\n")
        logging.info("test loss of %s (step %s) over %d test images: %.6g", path, result["step"], count,
                     result["test_loss"])

        runs = find_loss_logs(args.run)
        if runs:
            plot_figure1(runs, folder / "figure1.png")
            logging.info("wrote %s (runs: %s)", folder / "figure1.png", ", ".join(doc for doc, _, _ in runs))
        else:
            logging.warning("no run under %s has a %s; figure1.png not drawn", Path(args.run) / "logs", LOSS_LOG)
        logging.info("wrote %s", folder / "test_loss.json")
