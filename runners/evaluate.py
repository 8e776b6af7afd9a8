"""``--eval``: export ``eval.n_samples`` samples of a trained run into ``-o``/samples.npz (resumable, seeded per
batch, split over torchrun processes), score them against the run's data set (FID, KID; IS when the Inception
weights have logits) and write ``metrics.json`` and a grid of the first samples."""
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from datasets import get_dataset
from errors import UserError
from evaluation.export import MANIFEST, assemble, batch_sizes, export_batches, start_export
from runners.outputs import prepare_output_folder, save_grid
from training.distributed import barrier, is_main, main_process_first, rank, world_size


def eval_folder(folder, overwrite):
    """The output folder of --eval: new, empty, or holding this evaluation's own unfinished export (resumed)."""
    folder = Path(folder)
    if folder.is_dir() and (folder / MANIFEST).is_file():
        return folder
    return prepare_output_folder(folder, overwrite)


def reference_set(config, run_root):
    """The data split that samples are compared with, and a name for it (part of the statistics cache key)."""
    e, d = config.eval, config.data
    train, test = get_dataset(d, run_root)
    data = train if e.reference_split == "train" else test
    source = f"{d.dataset}/{e.reference_split}/{d.image_size}px/{d.channels}ch"
    if len(data) > e.max_reference:                 # a fixed subset, the same every time
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:e.max_reference]
        data = Subset(data, sorted(keep.tolist()))
        source += f"/subset{e.max_reference}"
    return data, source


def evaluate_run(runner, draw, state, sampling):
    """Export, score and report.  ``draw(size) -> uint8 (size, H, W, C)`` samples with the global RNG (seeded per
    batch by the export); ``state``: the loaded checkpoint; ``sampling``: the sampler settings, for the record."""
    from evaluation import inception_features, stats_cache_path
    from evaluation.scores import image_scores
    args, cfg, e = runner.args, runner.config, runner.config.eval
    if e.n_samples < 2:
        raise UserError(f"eval.n_samples must be at least 2 to compute FID and KID, got {e.n_samples}")
    folder = Path(args.image_folder)
    settings = {"n_samples": e.n_samples, "batch_size": e.batch_size, "seed": args.seed, "step": state.get("step"),
                "run": str(Path(args.log)), "sampling": sampling}

    def prepare(main):              # rank 0: weights and folder checked before any sample is drawn
        if not main:
            return True
        extractor = inception_features(weights=e.inception_weights, allow_download=e.allow_download,
                                       device=str(runner.device))
        start_export(eval_folder(folder, args.overwrite), settings)
        return extractor
    extractor = main_process_first(prepare)
    if extractor is None:
        return None                 # rank 0 failed, and says why
    n_batches = len(batch_sizes(e.n_samples, e.batch_size))
    mine = [k for k in range(n_batches) if k % world_size() == rank()]
    start = time.perf_counter()
    drawn = export_batches(draw, e.n_samples, e.batch_size, args.seed, folder, batches=mine, progress=is_main())
    logging.info("drew %d of %d batches in %.1f s (the rest were there from an earlier run)", len(drawn),
                 len(mine), time.perf_counter() - start)
    barrier()
    if not is_main():
        return
    path = assemble(folder, e.n_samples, e.batch_size)
    samples = np.load(path)["samples"]                                            # (N, H, W, C) uint8
    grid = torch.from_numpy(samples[:100]).permute(0, 3, 1, 2).float() / 255
    save_grid(grid, folder / "samples.png", nrow=max(1, round(len(grid) ** 0.5)))
    if e.save_png:
        _write_pngs(samples, folder / "png")
    reference, source = reference_set(cfg, args.run)
    data_root = Path(cfg.data.root).expanduser() if cfg.data.root else Path(args.run) / "datasets"
    cache = stats_cache_path(data_root, cfg.data.dataset, e.reference_split, extractor)
    scores = image_scores(samples, reference, extractor, cache, source, kid_subset_size=e.kid_subset_size)
    metrics = {**scores, "reference": source, "reference_statistics": str(cache), "samples": str(path),
               "checkpoint_step": state.get("step"), "seed": args.seed, "batch_size": e.batch_size,
               "sampling": sampling}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logging.info("FID %.3f, KID %.5f +- %.5f (%d samples against %d %s images); wrote %s", scores["fid"],
                 scores["kid"], scores["kid_std"], scores["n_samples"], scores["n_reference"], source,
                 folder / "metrics.json")
    return metrics


def _write_pngs(samples, folder):
    from PIL import Image
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(samples):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:06d}.png")
