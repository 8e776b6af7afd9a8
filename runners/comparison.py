"""Model comparison: the test-set score matching loss of every ``checkpoint_{step}.pth`` of a run, on fixed noise.

``compare_checkpoints(runner, folder)`` evaluates each checkpoint with :func:`evaluation.test_loss.per_level_test_loss`
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
import json
import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from datasets import get_dataset
from errors import UserError
from evaluation.test_loss import fixed_transform, per_level_test_loss
from runners.outputs import prepare_output_folder
from training.checkpoint import snapshot_step, uses_ema

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


def loss_settings(runner, objective=None):
    """How ``runner``'s checkpoints are scored: a dict of per_level_test_loss arguments plus ``score`` (model ->
    score_fn) and a ``name`` for the table."""
    cfg, kind = runner.config, type(runner).__name__
    t, d = cfg.training, cfg.data
    if objective not in (None, "dsm", "ssm"):
        raise UserError(f"model comparison: objective must be dsm or ssm, got {objective!r}")
    if kind == "AnnealRunner":
        from runners.anneal_runner import make_sigmas
        algo = objective or t.algo
        return dict(name=f"annealed {algo.upper()}", algo=algo, conditional=True,
                    sigmas=make_sigmas(cfg, torch.device("cpu")),
                    weight_power=t.anneal_power if algo == "dsm" else 2.0, n_particles=t.n_particles,
                    transform=fixed_transform(True, d.logit_transform))
    if kind == "BaselineRunner":
        if objective == "ssm":
            raise UserError("model comparison: the BaselineRunner is scored with DSM at model.sigma only")
        return dict(name="DSM", algo="dsm", conditional=False, sigmas=[cfg.model.sigma], weight_power=0.0,
                    n_particles=1, transform=fixed_transform(True, d.logit_transform))
    if kind == "ScoreNetRunner":
        algo = objective or t.algo
        if algo == "dsm" and t.noise_std == 0:
            raise UserError("model comparison: DSM needs training.noise_std > 0 (it is the DSM sigma)")
        return dict(name=algo.upper(), algo=algo, conditional=False, sigmas=[t.noise_std], weight_power=0.0,
                    n_particles=t.n_particles, transform=fixed_transform(False, d.logit_transform))
    raise UserError(f"model comparison is for image runners (AnnealRunner, BaselineRunner, ScoreNetRunner), "
                    f"not {kind}")


def level_columns(sigmas):
    return [f"level_{i}_sigma_{s:.4g}" for i, s in enumerate(sigmas)]


def compare_checkpoints(runner, folder, checkpoints=None, seed=0, max_images=None, metrics=None, objective=None,
                        batch_size=None, progress=True):
    """Evaluate checkpoints of ``runner``'s run (``runner.args.log``) on its test set; write comparison.csv/.json/.png.

    seed: fixes all noise (the same for every checkpoint).  max_images: the first N test images only (default all).
    metrics: optional ``{step or checkpoint file name: {"fid": value, ...}}`` added as columns and plotted.
    objective: ``"dsm"`` / ``"ssm"`` to override the run's training objective (AnnealRunner, ScoreNetRunner).
    batch_size: images per batch (default ``training.batch_size``; the numbers do not depend on it).
    Returns what comparison.json holds: ``{"rows", "best", "settings"}``.
    """
    from runners.figures import plot_model_comparison

    args, cfg, device = runner.args, runner.config, runner.device
    spec = loss_settings(runner, objective)
    found = find_checkpoints(args.log, checkpoints)
    if max_images is not None and max_images < 1:
        raise UserError(f"model comparison: max_images must be at least 1, got {max_images}")

    # every file is checked (readable, fits the network, finite weights) before the evaluation starts
    for _, path in found:
        try:
            runner.trained_model(path)
        except UserError as e:
            raise UserError(f"model comparison stopped, nothing evaluated: {e}") from e
    folder = prepare_output_folder(folder, getattr(args, "overwrite", False))

    _, test = get_dataset(cfg.data, args.run)
    n_images = len(test) if max_images is None else min(max_images, len(test))
    if n_images == 0:
        raise UserError(f"model comparison: the {cfg.data.dataset} test set is empty")
    bs = batch_size or cfg.training.batch_size
    subset = test if n_images == len(test) else Subset(test, range(n_images))
    metrics = metrics or {}
    metric_names = sorted({k for m in metrics.values() for k in m})

    rows = []
    for k, (step, path) in enumerate(found):
        model, state = runner.trained_model(path)
        if step is None and isinstance(state.get("step"), int):
            step = state["step"]
        loader = DataLoader(subset, batch_size=bs, shuffle=False, num_workers=cfg.training.num_workers)
        result = per_level_test_loss(model, loader, spec["sigmas"], seed=seed, weight_power=spec["weight_power"],
                                     algo=spec["algo"], n_particles=spec["n_particles"],
                                     transform=spec["transform"], conditional=spec["conditional"], device=device,
                                     total=len(loader), progress=progress,
                                     desc=f"{spec['name']} {path.name} ({k + 1}/{len(found)})")
        extra = metrics.get(step, metrics.get(path.name, {})) if metrics else {}
        row = {"step": step, "checkpoint": path.name, "ema": uses_ema(state), "mean": result["mean"], "stderr": result["stderr"],
               **{m: extra.get(m) for m in metric_names}, "per_level": result["per_level"]}
        rows.append(row)
        logging.info("%s (step %s): mean test %s loss %.6g +- %.2g", path.name, step, spec["name"], row["mean"],
                     row["stderr"])
        del model

    finite = [r for r in rows if math.isfinite(r["mean"])]
    best = min(finite, key=lambda r: r["mean"]) if finite else None
    sigmas = [float(s) for s in torch.as_tensor(spec["sigmas"], dtype=torch.float64).flatten().tolist()]
    settings = {"runner": type(runner).__name__, "objective": spec["name"], "algo": spec["algo"], "seed": seed,
                "n_images": n_images, "test_set_size": len(test), "dataset": cfg.data.dataset,
                "n_levels": len(sigmas), "sigmas": sigmas, "weight": f"sigma^{spec['weight_power']:g}",
                "n_particles": spec["n_particles"] if spec["algo"] == "ssm" else None, "batch_size": bs,
                "log_dir": str(args.log)}
    table = {"rows": rows, "best": None if best is None else {k: best[k] for k in ("step", "checkpoint", "mean")},
             "settings": settings}

    columns = level_columns(sigmas)
    with open(folder / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "checkpoint", "mean", "stderr", *metric_names, *columns])
        for r in rows:
            w.writerow(["" if r["step"] is None else r["step"], r["checkpoint"], repr(r["mean"]), repr(r["stderr"]),
                        *["" if r[m] is None else r[m] for m in metric_names], *[repr(v) for v in r["per_level"]]])
    (folder / "comparison.json").write_text(json.dumps(table, indent=2, allow_nan=True) + "\n")
    plot_model_comparison(rows, sigmas, folder / "comparison.png", metric_names=metric_names,
                          title=f"test {spec['name']} loss, {n_images} {cfg.data.dataset} test images, seed {seed}")
    if best is None:
        logging.warning("no checkpoint has a finite test loss; wrote %s", folder)
    else:
        logging.info("best checkpoint: %s (step %s), mean test %s loss %.6g over %d test images and %d levels "
                     "(seed %d); wrote comparison.csv, comparison.json and comparison.png in %s", best["checkpoint"],
                     best["step"], spec["name"], best["mean"], n_images, len(sigmas), seed, folder)
    return table
