"""The paper's figures drawn from runs: Figure 1 (score matching losses against steps) and the toy Figures 2 and 3
with the score-field GIF.  Every figure is written with matplotlib's Agg backend; nothing is shown."""
import math
from contextlib import contextmanager

import numpy as np
import torch

from reports.outputs import save_figure, save_gif

DENSITY_GRID, QUIVER_GRID = 100, 20          # official: 100x100 density image, 20x20 arrows


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
    save_figure(fig, path, dpi=120)


class ToyFigures:
    """Figures of a 2-D toy distribution ``dist`` (datasets/toy.py) on the square [-bound, bound]^2; score networks are
    evaluated on ``device``; ``sigmas`` (L,) are the NCSN's noise levels."""

    def __init__(self, dist, bound, device, sigmas):
        self.dist, self.bound, self.device, self.sigmas = dist, bound, device, sigmas

    def _grid(self, n):
        b = self.bound
        xs = torch.linspace(-b, b, n)
        gy, gx = torch.meshgrid(xs, xs, indexing="ij")
        return gx, gy, torch.stack([gx.flatten(), gy.flatten()], dim=1)          # (n, n), (n, n), (n*n, 2)

    def _density(self, ax, sigma=0.0, title="Data density", filled_levels=None):
        """p_sigma on the grid: an 'inferno' image (official), or 'Oranges' filled contours behind score arrows."""
        b, n = self.bound, DENSITY_GRID
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
        spacing = 2 * self.bound / (QUIVER_GRID - 1)
        ax.quiver(gx.numpy(), gy.numpy(), s[..., 0], s[..., 1], angles="xy", scale_units="xy", scale=scale / spacing,
                  width=0.004)

    def figure2(self, score_model, path):
        """Data density, data scores, estimated scores, and the score error against the data density.  Returns the
        claim of Figure 2 in numbers: the mean score error where data lives and where it does not."""
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
            save_figure(fig, path, bbox_inches="tight", dpi=60)
        # the claim of Figure 2 in numbers: the error where data lives vs. where it does not
        high = logp >= torch.quantile(logp, 0.9)
        low = logp <= torch.quantile(logp, 0.5)
        return {"mean_error_top10pct_density": round(float(err[high].mean()), 4),
                "mean_error_bottom50pct_density": round(float(err[low].mean()), 4)}

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
                    _square(ax, self.bound, f"{titles[m]}\n{detail}")
            save_figure(fig, path, bbox_inches="tight", dpi=60)

    def score_field_gif(self, ncsn, path):
        """One frame per noise level, largest to smallest: the learned s(x, sigma_i) next to the exact score."""
        frames = []
        with _style() as (Figure, sns):
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from PIL import Image
            for i, sigma in enumerate(self.sigmas.tolist()):
                _, _, pts = self._grid(QUIVER_GRID)
                scale = float(self.dist.score(pts, sigma).norm(dim=1).max())
                labels = lambda x, i=i: torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)   # noqa: E731
                fig = Figure(figsize=(8, 4.2), dpi=60)                          # 480 x 252 pixels
                ax1, ax2 = fig.subplots(1, 2)
                fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.9, wspace=0.2)
                self._quiver(ax1, lambda x, labels=labels: ncsn(x, labels(x)), f"learned, sigma = {sigma:.3g}", scale, sigma)
                self._quiver(ax2, lambda x, sigma=sigma: self.dist.score(x, sigma), f"exact, sigma = {sigma:.3g}", scale, sigma)
                canvas = FigureCanvasAgg(fig)
                canvas.draw()
                rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
                frames.append(rgb.quantize(colors=32, dither=Image.Dither.NONE))      # small GIF, no dither noise
        save_gif(frames, path, duration=600)


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


def plot_model_comparison(rows, sigmas, path, metric_names=(), title=None):
    """Checkpoints compared (commands/compare.py): the mean test loss against step (the best marked), the loss at
    each noise level against step, and one panel per metric (e.g. FID) where computed.  Rows without a step are
    placed by their order."""
    import matplotlib
    from matplotlib.figure import Figure
    has_steps = all(r["step"] is not None for r in rows)
    x = [r["step"] if has_steps else i for i, r in enumerate(rows)]
    xlabel = "training step" if has_steps else "checkpoint"
    metric_names = [m for m in metric_names if any(r.get(m) is not None for r in rows)]
    n = 2 + len(metric_names)
    fig = Figure(figsize=(4.6 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    means = [r["mean"] for r in rows]
    axes[0].plot(x, means, "o-", color="tab:blue", ms=4, label="mean over levels")
    finite = [(xi, m, r) for xi, m, r in zip(x, means, rows) if math.isfinite(m)]
    if finite:
        bx, bm, br = min(finite, key=lambda t: t[1])
        axes[0].plot([bx], [bm], "*", color="tab:red", ms=13, label=f"best: {br['checkpoint']}")
    axes[0].set(xlabel=xlabel, ylabel="test loss", title="mean over noise levels")
    axes[0].legend(fontsize=8)
    colors = [matplotlib.colormaps["viridis"](i / max(1, len(sigmas) - 1)) for i in range(len(sigmas))]
    for i, s in enumerate(sigmas):
        axes[1].plot(x, [r["per_level"][i] for r in rows], "o-", ms=3, lw=1, color=colors[i], label=f"sigma {s:.3g}")
    positive = all(v > 0 for r in rows for v in r["per_level"] if math.isfinite(v))
    axes[1].set(xlabel=xlabel, ylabel="test loss", title="per noise level", yscale="log" if positive else "linear")
    axes[1].legend(fontsize=7, ncol=2 if len(sigmas) > 6 else 1)
    for ax, m in zip(axes[2:], metric_names):
        pts = [(xi, r[m]) for xi, r in zip(x, rows) if r.get(m) is not None]
        ax.plot(*zip(*pts), "s-", color="tab:green", ms=4)
        ax.set(xlabel=xlabel, ylabel=m, title=m)
    for ax in axes:
        ax.grid(alpha=0.3)
        if not has_steps:
            ax.set_xticks(x, [r["checkpoint"] for r in rows], rotation=30, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110)


def plot_neighbours(samples, pixel_images, pixel_distances, feature_images, feature_distances, path, title=None):
    """The memorisation check (commands/evaluate.py): one row per sample, the sample then its nearest training images
    in pixel space (left block) and in feature space (right block), each titled with its L2 distance.
    ``samples``: uint8 (Q, H, W, C); ``*_images``: uint8 (Q, k, H, W, C); ``*_distances``: (Q, k)."""
    from matplotlib.figure import Figure
    q, k = pixel_images.shape[:2]
    kf = feature_images.shape[1]
    cols = 1 + k + 1 + 1 + kf                          # sample, pixel nns, gap, sample, feature nns
    fig = Figure(figsize=(0.9 * cols, 0.95 * q + 0.6), layout="constrained")
    axes = fig.subplots(q, cols, squeeze=False)

    def show(ax, image, label, color="black"):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(label, fontsize=6, color=color, pad=2)

    for i in range(q):
        show(axes[i, 0], samples[i], "sample", "tab:red")
        for j in range(k):
            show(axes[i, 1 + j], pixel_images[i, j], f"px {pixel_distances[i, j]:.3g}")
        show(axes[i, k + 2], samples[i], "sample", "tab:red")
        for j in range(kf):
            show(axes[i, k + 3 + j], feature_images[i, j], f"ft {feature_distances[i, j]:.3g}")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle((title + ": " if title else "") + "pixel space (left), feature space (right)", fontsize=8)
    save_figure(fig, path, dpi=110)
