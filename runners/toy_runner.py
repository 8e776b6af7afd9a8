"""ToyRunner: the 2-D experiments of the paper, Figure 2 (score estimates are poor where data is scarce) and
Figure 3 (annealing fixes the mode weights that plain Langevin dynamics gets wrong), measured as well as drawn.

``train()`` fits two MLPs on fresh samples of ``toy.dataset`` with the one ``train_loop``: a plain score model by sliced
score matching (Fig. 2) and a noise-conditional one (NCSN) by annealed DSM; then draws Figure 2 and runs the sampling
part.  ``test()`` reruns the sampling part from the saved models into ``-o``.  The sampling part compares i.i.d.
samples, Langevin and annealed Langevin with the exact score and with the learned models: ``figure3.png``, the GIF of
the learned score field from the largest to the smallest noise level, and ``metrics.json`` (mode weights, MMD).
Every figure is written with matplotlib's Agg backend; nothing is shown.
"""
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.toy import FreshSamples, mmd2, mode_metrics, toy_distribution
from losses import anneal_dsm_per_example, sliced_score_estimation_vr
from models import anneal_langevin_dynamics, geometric_sigmas, langevin_dynamics
from runners.common import load_trained, make_optimizer, prepare_output_folder, save_gif, \
    train_loop

METHODS = ("iid", "langevin", "annealed_langevin", "learned_langevin", "learned_annealed_langevin")
DENSITY_GRID, QUIVER_GRID = 100, 20          # official: 100x100 density image, 20x20 arrows


class ToyScore(nn.Module):
    """The official toy score model s(x): Linear(2,h)-Softplus-Linear(h,h)-Softplus-Linear(h,2)."""

    def __init__(self, hidden=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


class ToyNCSN(nn.Module):
    """Noise-conditional MLP s(x, i) = f(x / sqrt(1 + sigma_i^2), i) / sigma_i.

    The level enters through learned per-level biases of both hidden layers; input scaling and the 1/sigma output keep
    f of order one at every level (the score of the perturbed data has size ~ 1/sigma).  ``sigmas`` is a buffer that
    is not saved (it is in the checkpoint's ``sigmas``), so the state dict holds only weights.
    """

    def __init__(self, sigmas, hidden=128):
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32), persistent=False)
        self.fc1, self.fc2, self.fc3 = nn.Linear(2, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)
        self.embed1, self.embed2 = nn.Embedding(len(sigmas), hidden), nn.Embedding(len(sigmas), hidden)
        nn.init.zeros_(self.embed1.weight)
        nn.init.zeros_(self.embed2.weight)

    def forward(self, x, labels):
        sigma = self.sigmas[labels][:, None]                                  # (B, 1)
        h = F.softplus(self.fc1(x / (1 + sigma ** 2).sqrt()) + self.embed1(labels))
        h = F.softplus(self.fc2(h) + self.embed2(labels))
        return self.fc3(h) / sigma


class ToyRunner:
    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device
        self.toy = config.toy
        self.dist = toy_distribution(config.toy)
        self.seed = args.seed if config.toy.seed is None else config.toy.seed
        t = config.toy
        self.sigmas = geometric_sigmas(t.sigma_begin, t.sigma_end, t.num_sigmas, device=device)   # (L,) descending

    # ----------------------------------------------------------------------------------------------- training

    def train(self):
        with _cpu_threads(self.device):
            self._train()

    def test(self):
        with _cpu_threads(self.device):
            self._test()

    def _train(self):
        from tensorboardX import SummaryWriter
        torch.manual_seed(self.seed)
        cfg, log, tb = self.config, Path(self.args.log), Path(self.args.tb)
        t, sigmas, dist = cfg.training, self.sigmas, self.dist

        def ssm_loss(model, X):                       # official: loss, *_ = sliced_score_estimation_vr(...)
            return sliced_score_estimation_vr(model, X, n_particles=t.n_particles)[0].reshape(1), None

        def dsm_loss(model, X):
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
            return anneal_dsm_per_example(model, X, labels, sigmas, t.anneal_power), labels

        def score_fisher(model, X):                   # test: 0.5 E||s(x) - grad log p(x)||^2 with the exact score
            with torch.no_grad():
                return 0.5 * (model(X) - dist.score(X)).pow(2).sum(1).mean()

        def ncsn_fisher(model, X):                    # the same at random levels, weighted by sigma^2 like the DSM
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
            s = sigmas[labels][:, None]
            x = X + s * torch.randn_like(X)
            with torch.no_grad():
                err = (model(x, labels) - dist.score(x, s)).pow(2).sum(1)
            return 0.5 * (err * s[:, 0] ** 2).mean()

        models = {}
        for name, model, loss_fn, test_fn, seed in (
                ("score_model", ToyScore(self.toy.hidden), ssm_loss, score_fisher, self.seed),
                ("ncsn", ToyNCSN(sigmas, self.toy.hidden), dsm_loss, ncsn_fisher, self.seed + 2)):
            logging.info("training the %s (%s) on %s", name, "sliced SM" if name == "score_model" else "annealed DSM",
                         dist.name)
            (log / name).mkdir()
            model = model.to(self.device)
            writer = SummaryWriter(str(tb / name))
            train_loop(model=model, loss_fn=loss_fn, optimizer=make_optimizer(model.parameters(), cfg.optim),
                       train_stream=FreshSamples(dist, t.batch_size, seed),
                       test_stream=FreshSamples(dist, t.batch_size, seed + 1), test_fn=test_fn,
                       test_name="test_fisher_divergence", config=cfg, log_dir=log / name, writer=writer,
                       device=self.device, sigmas=sigmas if name == "ncsn" else None)
            writer.close()
            models[name] = model.eval()

        figures = log / "figures"
        figures.mkdir()
        self.figure2(models["score_model"], figures / "figure2.png", log / "score_error.json")
        self.sample_and_report(models["score_model"], models["ncsn"], figures, log / "metrics.json")

    def _test(self):
        log = Path(self.args.log)
        models = []
        for name, model in (("score_model", ToyScore(self.toy.hidden)), ("ncsn", ToyNCSN(self.sigmas,
                                                                                        self.toy.hidden))):
            models.append(load_trained(model, log / name / "checkpoint.pth", self.device)[0])
        folder = prepare_output_folder(self.args.image_folder, self.args.overwrite)
        self.sample_and_report(*models, folder, folder / "metrics.json")

    # ------------------------------------------------------------------------------------------------ sampling

    def sample_all(self, score_model, ncsn):
        """{method: samples (n, 2)} for METHODS; all chains start from the same U[-bound, bound]^2 draw."""
        t, dist, sigmas = self.toy, self.dist, self.sigmas
        step_lr = t.langevin_lr / 2        # paper form x += lr/2 s + sqrt(lr) z  ==  models/langevin.py with a = lr/2
        x0 = (torch.rand(t.n_samples, 2, device=self.device) * 2 - 1) * t.bound
        exact = lambda x, labels: dist.score(x, sigmas[labels[0]])                      # noqa: E731
        out = {"iid": dist.sample(t.n_samples).to(self.device),
               "langevin": langevin_dynamics(dist.score, x0, t.langevin_steps, step_lr),
               # a_i = step_lr (sigma_i / sigma_L)^2: the official lr_i = lr sigma_i^2 / sigma_L^2 in paper form
               "annealed_langevin": anneal_langevin_dynamics(exact, x0, sigmas, t.n_steps_each, step_lr),
               "learned_langevin": langevin_dynamics(score_model, x0, t.langevin_steps, step_lr),
               "learned_annealed_langevin": anneal_langevin_dynamics(ncsn, x0, sigmas, t.n_steps_each, step_lr)}
        return {k: v.detach().cpu() for k, v in out.items()}

    def sample_and_report(self, score_model, ncsn, folder, metrics_path):
        torch.manual_seed(self.seed + 4)            # the same chains after training and with --test
        samples = self.sample_all(score_model, ncsn)
        reference = self.dist.sample(self.toy.n_samples)                 # independent i.i.d. set for the MMD
        sigma_end = float(self.sigmas[-1])
        perturbed = reference + sigma_end * torch.randn_like(reference)  # annealed chains target p_{sigma_L}
        metrics = {}
        for m in METHODS:
            metrics[m] = mode_metrics(self.dist, samples[m], reference)
            if "annealed" in m:
                metrics[m]["mmd2_to_perturbed"] = round(mmd2(samples[m], perturbed), 5)
            logging.info("%s: mode weights %s (true %s), %d/%d modes, mmd2 %.4g", m, metrics[m]["mode_weights"],
                         metrics[m]["true_weights"], metrics[m]["modes_covered"], self.dist.n_modes,
                         metrics[m]["mmd2"])
        Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
        self.figure3(samples, metrics, Path(folder) / "figure3.png")
        self.score_field_gif(ncsn, Path(folder) / "score_field.gif")
        torch.save(samples, Path(folder) / "samples.pth")
        logging.info("wrote %s, %s and the figures in %s", metrics_path, Path(folder) / "samples.pth", folder)

    # ------------------------------------------------------------------------------------------------- figures

    def _grid(self, n):
        b = self.toy.bound
        xs = torch.linspace(-b, b, n)
        gy, gx = torch.meshgrid(xs, xs, indexing="ij")
        return gx, gy, torch.stack([gx.flatten(), gy.flatten()], dim=1)          # (n, n), (n, n), (n*n, 2)

    def _density(self, ax, sigma=0.0, title="Data density", filled_levels=None):
        """p_sigma on the grid: an 'inferno' image (official), or 'Oranges' filled contours behind score arrows."""
        b, n = self.toy.bound, DENSITY_GRID
        gx, gy, pts = self._grid(n)
        p = self.dist.log_prob(pts, sigma).exp().view(n, n).numpy()
        if filled_levels:
            ax.contourf(gx.numpy(), gy.numpy(), p, levels=filled_levels, cmap="Oranges")
        else:
            ax.imshow(p, origin="lower", extent=(-b, b, -b, b), cmap="inferno")
        _square(ax, b, title)

    def _quiver(self, ax, score_fn, title, scale, density_sigma):
        """Arrows of score_fn on a 20x20 grid over p_{density_sigma}; ``scale``: the norm drawn as one grid spacing."""
        gx, gy, pts = self._grid(QUIVER_GRID)
        with torch.no_grad():
            s = score_fn(pts.to(self.device)).float().cpu().view(QUIVER_GRID, QUIVER_GRID, 2).numpy()
        self._density(ax, density_sigma, title, filled_levels=8)
        spacing = 2 * self.toy.bound / (QUIVER_GRID - 1)
        ax.quiver(gx.numpy(), gy.numpy(), s[..., 0], s[..., 1], angles="xy", scale_units="xy", scale=scale / spacing,
                  width=0.004)

    def figure2(self, score_model, path, error_path):
        """Data density, data scores, estimated scores, and the score error against the data density."""
        dist = self.dist
        _, _, pts = self._grid(DENSITY_GRID)
        with torch.no_grad():
            err = (score_model(pts.to(self.device)).float().cpu() - dist.score(pts)).norm(dim=1)    # (n*n,)
        logp = dist.log_prob(pts)
        data_scale = float(dist.score(pts).norm(dim=1).max())
        with _style() as (Figure, sns):
            fig = Figure(figsize=(22, 5.2))
            axes = fig.subplots(1, 4, gridspec_kw={"wspace": 0.3})
            self._density(axes[0])
            self._quiver(axes[1], dist.score, "Data scores", data_scale, 0.0)
            self._quiver(axes[2], score_model, "Estimated scores", data_scale, 0.0)
            # grid points binned by log density: median error and its 10-90% band
            edges = torch.linspace(float(logp.min()), float(logp.max()), 25)
            centres = ((edges[1:] + edges[:-1]) / 2)[torch.bucketize(logp, edges[1:-1])]
            sns.lineplot(x=centres.numpy(), y=err.numpy(), estimator="median", errorbar=("pi", 80), marker="o",
                         ax=axes[3])
            axes[3].set(xlabel="log data density", ylabel="score error", yscale="log",
                        title="Score error vs. density")
            fig.savefig(path, bbox_inches="tight", dpi=60)
        # the claim of Figure 2 in numbers: the error where data lives vs. where it does not
        high = logp >= torch.quantile(logp, 0.9)
        low = logp <= torch.quantile(logp, 0.5)
        numbers = {"mean_error_top10pct_density": round(float(err[high].mean()), 4),
                   "mean_error_bottom50pct_density": round(float(err[low].mean()), 4)}
        Path(error_path).write_text(json.dumps({"score_model": numbers}, indent=2) + "\n")
        logging.info("score error: %s", numbers)

    def figure3(self, samples, metrics, path):
        """Top: i.i.d., Langevin and annealed Langevin with the exact score; bottom: density and the learned models."""
        titles = {"iid": "i.i.d. samples", "langevin": "Langevin", "annealed_langevin": "Annealed Langevin",
                  "learned_langevin": "Langevin, learned score", "learned_annealed_langevin": "Annealed, learned NCSN"}
        order = [["iid", "langevin", "annealed_langevin"], [None, "learned_langevin", "learned_annealed_langevin"]]
        with _style() as (Figure, sns):
            fig = Figure(figsize=(15, 10.4))
            axes = fig.subplots(2, 3)
            for row, names in zip(axes, order):
                for ax, m in zip(row, names):
                    if m is None:
                        self._density(ax)
                        continue
                    x, r = samples[m].numpy(), metrics[m]
                    ax.scatter(x[:, 0], x[:, 1], s=1.5, color="C0")
                    if self.dist.n_modes <= 4:
                        detail = "weights " + ", ".join(f"{v:.2f}" for v in r["mode_weights"])
                    else:
                        detail = f"{r['modes_covered']}/{r['n_modes']} modes, weight TV {r['weight_tv']:.3f}"
                    _square(ax, self.toy.bound, f"{titles[m]}\n{detail}")
            fig.savefig(path, bbox_inches="tight", dpi=60)

    def score_field_gif(self, ncsn, path):
        """One frame per noise level, largest to smallest: the learned s(x, sigma_i) next to the exact score."""
        frames = []
        with _style() as (Figure, sns):
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from PIL import Image
            for i, sigma in enumerate(self.sigmas.tolist()):
                _, _, pts = self._grid(QUIVER_GRID)
                scale = float(self.dist.score(pts, sigma).norm(dim=1).max())
                labels = lambda x: torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)   # noqa: E731
                fig = Figure(figsize=(8, 4.2), dpi=60)                          # 480 x 252 pixels
                ax1, ax2 = fig.subplots(1, 2)
                fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.9, wspace=0.2)
                self._quiver(ax1, lambda x: ncsn(x, labels(x)), f"learned, sigma = {sigma:.3g}", scale, sigma)
                self._quiver(ax2, lambda x: self.dist.score(x, sigma), f"exact, sigma = {sigma:.3g}", scale, sigma)
                canvas = FigureCanvasAgg(fig)
                canvas.draw()
                rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
                frames.append(rgb.quantize(colors=32, dither=Image.Dither.NONE))      # small GIF, no dither noise
        save_gif(frames, path, duration=600)


@contextmanager
def _cpu_threads(device):
    """One intra-op thread on CPU: for these tiny 2-D batches more threads only add synchronisation (on a busy 2-core
    machine a sliced-score-matching step took 69 ms with 2 threads and 1.8 ms with 1)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _square(ax, bound, title):
    ax.set(xlim=(-bound, bound), ylim=(-bound, bound), title=title, aspect="equal")


@contextmanager
def _style():
    """seaborn's white style (official: sns.set(font_scale=1.3), style 'white') for figures drawn with Agg only."""
    import matplotlib
    matplotlib.use("Agg")                       # headless: never a window, whatever the environment says
    import seaborn as sns
    from matplotlib.figure import Figure
    with sns.axes_style("white"), sns.plotting_context("notebook", font_scale=1.3):
        yield Figure, sns
