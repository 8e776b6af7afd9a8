"""ScoreNetRunner: Figure 1 of Song & Ermon 2019 -- score matching on raw data is unstable, on slightly noisy data not.

A ResScore network s_theta(x) is trained with sliced score matching (``training.algo: ssm``, Song et al. 2019, with
variance reduction) on images perturbed by ``training.noise_std`` * N(0, I) (0 = raw data), or with denoising score
matching at sigma = noise_std (``algo: dsm``).  As official there is no dequantisation.  Tensorboard scalars ``loss``
and ``sigma`` every step, ``test_loss`` every ``training.test_freq`` steps; the same losses also go to
``<run>/logs/<doc>/losses.csv`` (step,tag,value) so that the figure needs no tensorboard.

``--test`` evaluates the checkpoint's loss over the whole test set and draws Figure 1 from every run under
``<run>/logs/`` that has a ``losses.csv`` (one panel per run, ordered by noise_std).
"""
import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs import ConfigError, UserError, load_config
from datasets import data_transform, get_dataset
from losses import dsm_per_example, sliced_score_estimation_vr
from models import ResScore
from runners.common import load_trained, prepare_output_folder, setup_training, train_loop

LOSS_LOG = "losses.csv"
LOGGED_TAGS = ("loss", "test_loss")


def build_scorenet(config):
    d, m = config.data, config.model
    try:
        return ResScore(channels=d.channels, nef=m.nef, ndf=m.ndf, logit_transform=d.logit_transform)
    except ValueError as e:
        raise ConfigError(f"model.nef / model.ndf: {e}") from e


def scorenet_loss(model, X, config):
    """The official ScoreNetRunner objective on a batch X (B, C, H, W) in [0, 1].

    Returns (per_example, None): SSM gives its batch mean as a (1,) tensor, DSM a (B,) tensor.
    SSM differentiates the network with respect to its input, so this must not run under ``no_grad``.
    """
    t = config.training
    X = data_transform(X, config.data, dequantize=False)        # only the optional logit, as official
    if t.algo == "ssm":
        X = X + torch.randn_like(X) * t.noise_std               # noise_std 0: the raw data
        return sliced_score_estimation_vr(model, X, n_particles=t.n_particles)[0].reshape(1), None
    return dsm_per_example(model, X, sigma=t.noise_std), None


class LossLog:
    """A tensorboard writer that also appends the ``loss`` and ``test_loss`` scalars to a CSV file (step,tag,value).

    On resume (``start_step`` > 0) rows after ``start_step`` are dropped, as tensorboard's ``purge_step`` does.
    """

    def __init__(self, writer, path, start_step=0):
        self.writer, self.path = writer, Path(path)
        rows = [r for r in read_rows(self.path) if int(r[0]) <= start_step] if start_step else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:              # the kept rows replace the old file in one rename
            csv.writer(f).writerows([("step", "tag", "value"), *rows])
        tmp.replace(self.path)
        self.file = open(self.path, "a", newline="")
        self.csv = csv.writer(self.file)

    def __getattr__(self, name):                            # everything else is the tensorboard writer's
        return getattr(self.writer, name)

    def add_scalar(self, tag, value, global_step=None):
        self.writer.add_scalar(tag, value, global_step=global_step)
        if tag in LOGGED_TAGS:
            self.csv.writerow((global_step, tag, repr(float(value))))

    def flush(self):
        self.writer.flush()
        self.file.flush()

    def close(self):
        self.writer.close()
        self.file.close()


def read_rows(path):
    """Rows (step, tag, value) of a loss log, as strings; [] if the file does not exist."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["step", "tag", "value"]:
        raise UserError(f"{path} is not a loss log (expected the header step,tag,value)")
    return [r for r in rows[1:] if len(r) == 3]       # a row cut by a crash is skipped


def read_loss_log(path):
    """{tag: (steps, values)} from a loss log; non-finite values are kept (they are what Figure 1 is about)."""
    out = {}
    for step, tag, value in read_rows(path):
        steps, values = out.setdefault(tag, ([], []))
        try:
            steps.append(int(step))
            values.append(float(value))
        except ValueError as e:
            raise UserError(f"{path} has a bad row {step},{tag},{value}") from e
    return out


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


def _running_mean(values, window):
    """Mean of the last ``window`` values at every position (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    hi = np.arange(1, len(v) + 1)
    lo = np.maximum(0, hi - window)
    return (c[hi] - c[lo]) / (hi - lo)


def plot_figure1(runs, path):
    """One panel per run: the training loss (thin), its running mean and the test loss (dots) against steps."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.2 * len(runs), 3.4), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (doc, cfg, log) in zip(axes, runs):
        t = cfg.training
        noise = "raw data (no noise)" if t.noise_std == 0 else f"noise std {t.noise_std:g}"
        ax.set_title(f"{t.algo.upper()} on {cfg.data.dataset}, {noise}", fontsize=10)
        if "loss" in log:
            steps, values = log["loss"]
            finite = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
            if finite:
                s, v = zip(*finite)
                ax.plot(s, v, lw=0.6, alpha=0.45, color="tab:blue", label="training loss")
                ax.plot(s, _running_mean(v, max(1, len(v) // 50)), lw=1.4, color="tab:blue",
                        label="running mean")
            if len(finite) < len(values):
                ax.axvline(steps[len(finite)], color="tab:red", ls="--", lw=1,
                           label=f"non-finite from step {steps[len(finite)]}")
        if "test_loss" in log:
            ax.plot(*log["test_loss"], "o", ms=3.5, color="tab:orange", label="test loss")
        ax.set_xlabel(f"training step  (run '{doc}')")
        ax.set_ylabel("score matching loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


class ScoreNetRunner:
    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device

    def train(self):
        cfg, t = self.config, self.config.training
        if t.algo == "dsm" and t.noise_std == 0:
            raise ConfigError("training.algo dsm needs training.noise_std > 0 (it is the DSM sigma)")

        def loss_fn(model, X):
            return scorenet_loss(model, X, cfg)

        def test_fn(model, X):          # with gradients on: SSM needs d s(x) / dx (official: also for the test loss)
            return scorenet_loss(model, X, cfg)[0].mean().item()

        s = setup_training(self.args, cfg, self.device, build_scorenet(cfg))
        s["writer"] = writer = LossLog(s["writer"], Path(self.args.log) / LOSS_LOG, s["start_step"])
        try:
            train_loop(loss_fn=loss_fn, test_fn=test_fn, test_name="test_loss", extra_scalars={"sigma": t.noise_std},
                       **s)
        finally:
            writer.close()

    def test(self):
        """Test loss of the checkpoint over the whole test set (``test_loss.json``) and ``figure1.png`` in ``-o``."""
        cfg, args = self.config, self.args
        path = Path(args.log) / "checkpoint.pth"
        model, state = load_trained(build_scorenet(cfg), path, self.device)
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
