"""Model comparison: the test-set score matching loss of every ``checkpoint_{step}.pth`` of a run, on fixed noise.

``compare_checkpoints(runner, folder)`` evaluates each checkpoint with the runner's held-out loss
(``runner.held_out_loss()``, :func:`evaluation.held_out.per_level_test_loss`)
(every test image at every noise level, the noise fixed by ``seed``, so all checkpoints see the same noisy images)
and writes into ``folder``:

- ``comparison.csv``: one row per checkpoint: step, checkpoint, mean, stderr, [metrics such as fid], then one column
  per noise level ``level_{i}_sigma_{sigma}``;
- ``comparison.json``: the same rows (each with ``ema``: whether the checkpoint's EMA weights were scored, as they
  are whenever it has them), ``best`` (the checkpoint with the lowest finite mean) and the settings (runner,
  objective, seed, number of test images, sigmas, weighting, batch size);
- ``comparison.png``: the mean loss against step (best marked), the per-level losses against step, and one panel per
  metric when ``metrics`` are given.

What each runner's loss is: AnnealRunner: annealed DSM over its L levels weighted by sigma^anneal_power (the paper's
Eq. 6), or annealed SSM weighted by sigma^2 for a ``training.algo: ssm`` run (``objective`` forces either);
BaselineRunner: DSM at its one ``model.sigma``, unweighted; ScoreNetRunner: its own objective (SSM or DSM) at
``training.noise_std``, without dequantisation (as it trains).  ToyRunner runs are refused (they have no test set).

Checkpoints: ``checkpoints`` names files (in the run's log folder unless a path is given); by default every
``checkpoint_{step}.pth`` of the run, by step, or ``checkpoint.pth`` alone when there are none.  The step of a
numbered file is taken from its name (the official list-format snapshots hold no step), else from the file.
Every checkpoint is loaded once before any is evaluated: one that cannot be read, does not fit the config's network
or holds non-finite weights stops the comparison with one error naming the file, before the long evaluation starts
and before anything is written.
"""
import csv
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from atomic import atomic_write, write_json
from commands.evaluate import drawing, reference_set
from datasets import data_root, get_dataset
from errors import UserError
from evaluation import inception_features, stats_cache_path
from evaluation.export import assemble, export_batches, start_export
from evaluation.held_out import per_level_test_loss
from evaluation.reference import check_reference_data
from evaluation.scores import image_scores
from reports.figures import plot_model_comparison
from reports.outputs import prepare_output_folder
from training.checkpoint import snapshot_step, uses_ema, weights_digest


def find_checkpoints(log_dir, checkpoints=None):
    """[(step or None, path)] to compare: ``checkpoints`` (names in ``log_dir`` or paths, in the order given), else
    every ``checkpoint_{step}.pth`` by step, else ``checkpoint.pth``; none: a UserError."""
    log_dir = Path(log_dir)
    if checkpoints:
        paths = [Path(c) if (Path(c).is_absolute() or Path(c).parent != Path(".")) else log_dir / c
                 for c in checkpoints]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"model comparison: no checkpoint at {missing[0]}")
        return [(snapshot_step(p), p) for p in paths]
    numbered = sorted((step, p) for p in log_dir.glob("checkpoint_*.pth")
                      if (step := snapshot_step(p)) is not None and p.is_file())
    if numbered:
        return numbered
    if (log_dir / "checkpoint.pth").is_file():
        return [(None, log_dir / "checkpoint.pth")]
    raise UserError(f"model comparison: no checkpoint_<step>.pth or checkpoint.pth in {log_dir}; train the run first")


def level_columns(sigmas):
    return [f"level_{i}_sigma_{s:.4g}" for i, s in enumerate(sigmas)]


def compare(ctx, runner):
    """--compare: every checkpoint of the run scored on its test set; comparison.csv/.json/.png in ``-o``."""
    compare_checkpoints(runner, ctx.image_folder)


def compare_checkpoints(runner, folder, checkpoints=None, seed=0, max_images=None, metrics=None, objective=None,
                        batch_size=None, progress=True):
    """Evaluate checkpoints of ``runner``'s run (``runner.ctx.log``) on its test set; write comparison.csv/.json/.png.

    seed: fixes all noise (the same for every checkpoint).  max_images: the first N test images only (default all).
    metrics: optional ``{step or checkpoint file name: {"fid": value, ...}}`` added as columns and plotted.
    objective: ``"dsm"`` / ``"ssm"`` to override the run's training objective (AnnealRunner, ScoreNetRunner).
    batch_size: images per batch (default ``training.batch_size``; the numbers do not depend on it).
    Returns what comparison.json holds: ``{"rows", "best", "settings"}``.
    """
    ctx, cfg, e = runner.ctx, runner.config, runner.config.eval
    spec = runner.held_out_loss(objective)
    if spec is None:
        raise UserError(f"model comparison needs a held-out loss on a test set; {type(runner).__name__} has none")
    found = in_step_range(find_checkpoints(ctx.log, checkpoints), e.begin_step, e.end_step)
    if max_images is not None and max_images < 1:
        raise UserError(f"model comparison: max_images must be at least 1, got {max_images}")
    check_checkpoints(runner, found)
    folder = Path(folder)
    if not (folder / SAMPLES).is_dir():            # else: an interrupted comparison, continued
        folder = prepare_output_folder(folder, ctx.overwrite)
    if e.compare_n_samples:                         # FID and KID of every checkpoint's samples, under one seed
        metrics = {**(metrics or {}), **sample_scores(runner, found, folder)}

    _, test = get_dataset(cfg.data, ctx.run)
    n_images = len(test) if max_images is None else min(max_images, len(test))
    if n_images == 0:
        raise UserError(f"model comparison: the {cfg.data.dataset} test set is empty")
    bs = batch_size or cfg.training.batch_size
    subset = test if n_images == len(test) else Subset(test, range(n_images))
    metrics = metrics or {}
    metric_names = sorted({k for m in metrics.values() for k in m})
    rows = [score_checkpoint(runner, spec, path, step, subset, bs, seed, progress, f"({k + 1}/{len(found)})",
                             metrics, metric_names)
            for k, (step, path) in enumerate(found)]

    finite = [r for r in rows if math.isfinite(r["mean"])]
    best = min(finite, key=lambda r: r["mean"]) if finite else None
    sigmas = [float(s) for s in torch.as_tensor(spec.sigmas, dtype=torch.float64).flatten().tolist()]
    settings = {"runner": type(runner).__name__, "objective": spec.name, "algo": spec.algo, "seed": seed,
                "n_images": n_images, "test_set_size": len(test), "dataset": cfg.data.dataset,
                "n_levels": len(sigmas), "sigmas": sigmas, "weight": f"sigma^{spec.weight_power:g}",
                "n_particles": spec.n_particles if spec.algo == "ssm" else None, "batch_size": bs,
                "log_dir": str(ctx.log)}
    table = {"rows": rows, "best": None if best is None else {k: best[k] for k in ("step", "checkpoint", "mean")},
             "settings": settings}
    if metric_names:                                # the best checkpoint by each number (lower is better)
        table["best_by"] = {"mean": table["best"]}
        for m in metric_names:
            scored = [r for r in rows if r[m] is not None and math.isfinite(r[m])]
            table["best_by"][m] = None if not scored else {k: v for k, v in min(scored, key=lambda r: r[m]).items()
                                                           if k in ("step", "checkpoint", m)}
            if table["best_by"][m]:
                logging.info("best checkpoint by %s: %s (step %s), %s %.4g", m, table["best_by"][m]["checkpoint"],
                             table["best_by"][m]["step"], m, table["best_by"][m][m])
    if e.compare_n_samples:
        settings.update(compare_n_samples=e.compare_n_samples, sample_seed=ctx.seed, begin_step=e.begin_step,
                        end_step=e.end_step)
    write_comparison(folder, table, metric_names,
                     title=f"test {spec.name} loss, {n_images} {cfg.data.dataset} test images, seed {seed}")
    if best is None:
        logging.warning("no checkpoint has a finite test loss; wrote %s", folder)
    else:
        logging.info("best checkpoint: %s (step %s), mean test %s loss %.6g over %d test images and %d levels "
                     "(seed %d); wrote comparison.csv, comparison.json and comparison.png in %s", best["checkpoint"],
                     best["step"], spec.name, best["mean"], n_images, len(sigmas), seed, folder)
    return table


def in_step_range(found, begin=None, end=None):
    """The checkpoints of ``found`` whose step lies in [begin, end] (a bound of None: none); an empty range is one
    UserError naming the steps there are."""
    if begin is None and end is None:
        return found
    kept = [(s, p) for s, p in found if s is not None and (begin is None or s >= begin) and (end is None or s <= end)]
    if not kept:
        steps = ", ".join(str(s) for s, _ in found if s is not None) or "none"
        raise UserError(f"model comparison: no checkpoint between eval.begin_step {begin} and eval.end_step {end} "
                        f"(the run's steps: {steps})")
    return kept


SAMPLES = "samples"             # <folder>/samples/<checkpoint>/: each checkpoint's export and its scores.json


def sample_scores(runner, found, folder):
    """{checkpoint file name: {"fid", "kid"}} (scores.json also holds KID's standard deviation): ``eval.compare_n_samples`` samples of each checkpoint,
    drawn under the same seeds (``--seed``) as --eval draws them, scored against the run's reference set.  Each
    checkpoint's export and scores are kept in ``folder``/samples/<checkpoint>/, so that an interrupted comparison
    continues with the checkpoint it stopped at; an export of other weights or settings there starts over."""
    ctx, cfg, e = runner.ctx, runner.config, runner.config.eval
    choice = runner.sampler()
    if choice is None:
        raise UserError(f"eval.compare_n_samples needs an image sampler; {ctx.runner} has none")
    extractor = inception_features(weights=e.inception_weights, allow_download=e.allow_download,
                                   device=str(runner.device))
    check_reference_data(cfg, ctx.run, extractor)
    reference, source = reference_set(cfg, ctx.run)
    cache = stats_cache_path(data_root(cfg.data, ctx.run), cfg.data.dataset, e.reference_split, extractor)
    out = {}
    for k, (step, path) in enumerate(found):
        model, state = runner.trained_model(path)
        sub = folder / SAMPLES / path.stem
        settings = {"checkpoint": path.name, "step": state.get("step", step), "ema": uses_ema(state),
                    "weights": weights_digest(model), "n_samples": e.compare_n_samples, "batch_size": e.batch_size,
                    "seed": ctx.seed, "sampling": choice.record, "reference": source}
        done = sub / "scores.json"
        if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
            scores = json.loads(done.read_text())["scores"]
            out[path.name] = {"fid": scores["fid"], "kid": scores["kid"]}
            logging.info("%s: FID %.4g (scored before)", path.name, scores["fid"])
            continue
        sub.mkdir(parents=True, exist_ok=True)
        start_export(sub, settings, replace=True)
        draw, _ = drawing(choice, runner.score_fn(model), cfg.data)
        logging.info("%s (%d/%d): drawing %d samples", path.name, k + 1, len(found), e.compare_n_samples)
        export_batches(draw, e.compare_n_samples, e.batch_size, ctx.seed, sub)
        samples = np.load(assemble(sub, e.compare_n_samples, e.batch_size))["samples"]
        s = image_scores(samples, reference, extractor, cache, source, kid_subset_size=e.kid_subset_size)
        out[path.name] = {"fid": s["fid"], "kid": s["kid"]}
        write_json(done, {"settings": settings, "scores": {**out[path.name], "kid_std": s["kid_std"]}})
        logging.info("%s: FID %.4g, KID %.4g +- %.2g (%d samples)", path.name, s["fid"], s["kid"], s["kid_std"],
                     e.compare_n_samples)
        del model
    return out


def check_checkpoints(runner, found):
    """Every file is loaded once (readable, fits the network, finite weights) before the evaluation starts."""
    for _, path in found:
        try:
            runner.trained_model(path)
        except UserError as e:
            raise UserError(f"model comparison stopped, nothing evaluated: {e}") from e


def score_checkpoint(runner, spec, path, step, images, batch_size, seed, progress, counter, metrics, metric_names):
    """One row of the table: the held-out loss ``spec`` of the checkpoint at ``path`` on ``images``, and its
    ``metrics`` (by step or file name)."""
    model, state = runner.trained_model(path)
    if step is None and isinstance(state.get("step"), int):
        step = state["step"]
    extra = metrics.get(step, metrics.get(path.name, {}))
    extra = {m: extra.get(m) for m in metric_names}
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=runner.config.training.num_workers)
    result = per_level_test_loss(model, loader, spec.sigmas, seed=seed, weight_power=spec.weight_power,
                                 algo=spec.algo, n_particles=spec.n_particles, transform=spec.transform,
                                 conditional=spec.conditional, device=runner.device, total=len(loader),
                                 progress=progress, desc=f"{spec.name} {path.name} {counter}")
    row = {"step": step, "checkpoint": path.name, "ema": uses_ema(state), "mean": result["mean"],
           "stderr": result["stderr"], **extra, "per_level": result["per_level"]}
    logging.info("%s (step %s): mean test %s loss %.6g +- %.2g", path.name, step, spec.name, row["mean"],
                 row["stderr"])
    return row


def write_comparison(folder, table, metric_names, title):
    """comparison.csv, comparison.json and comparison.png of a table."""
    rows, sigmas = table["rows"], table["settings"]["sigmas"]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["step", "checkpoint", "mean", "stderr", *metric_names, *level_columns(sigmas)])
    for r in rows:
        w.writerow(["" if r["step"] is None else r["step"], r["checkpoint"], repr(r["mean"]), repr(r["stderr"]),
                    *["" if r[m] is None else r[m] for m in metric_names], *[repr(v) for v in r["per_level"]]])
    atomic_write(folder / "comparison.csv", text.getvalue().encode())
    write_json(folder / "comparison.json", table)
    plot_model_comparison(rows, sigmas, folder / "comparison.png", metric_names=metric_names, title=title)
