"""``--eval``: export ``eval.n_samples`` samples of a trained run into ``-o``/samples.npz (resumable, seeded per
batch, split over torchrun processes), score them against the run's data set (FID, KID; IS when the Inception
weights have logits) and write ``metrics.json``, a grid of the first samples, and their nearest training images
(``neighbours.json``, ``neighbours.png``: the memorisation check)."""
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from datasets import data_root, get_dataset
from errors import UserError
from evaluation.export import MANIFEST, assemble, batch_sizes, export_batches, start_export
from evaluation.reference import feature_rows
from runners.outputs import prepare_output_folder, save_grid
from training.checkpoint import uses_ema
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
    batch by the export); ``state``: the loaded checkpoint; ``sampling``: the sampler settings, for the record.
    ``ema`` in the manifest and metrics.json: whether the samples come from the checkpoint's EMA weights."""
    from evaluation import inception_features, stats_cache_path
    from evaluation.scores import image_scores
    args, cfg, e = runner.args, runner.config, runner.config.eval
    if e.n_samples < 2:
        raise UserError(f"eval.n_samples must be at least 2 to compute FID and KID, got {e.n_samples}")
    folder = Path(args.image_folder)
    settings = {"n_samples": e.n_samples, "batch_size": e.batch_size, "seed": args.seed, "step": state.get("step"),
                "ema": uses_ema(state), "run": str(Path(args.log)), "sampling": sampling}

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
    mine = _my_batches(folder, n_batches)
    start = time.perf_counter()
    drawn = export_batches(draw, e.n_samples, e.batch_size, args.seed, folder, batches=mine, progress=is_main())
    logging.info("drew %d of %d batches in %.1f s (the rest were there from an earlier run%s)", len(drawn),
                 n_batches, time.perf_counter() - start, " or drawn by the other processes" if world_size() > 1 else "")
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
    cache = stats_cache_path(data_root(cfg.data, args.run), cfg.data.dataset, e.reference_split, extractor)
    scores = image_scores(samples, reference, extractor, cache, source, kid_subset_size=e.kid_subset_size)
    metrics = {**scores, "reference": source, "reference_statistics": str(cache), "samples": str(path),
               "checkpoint_step": state.get("step"), "ema": uses_ema(state), "seed": args.seed,
               "batch_size": e.batch_size,
               "sampling": sampling}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logging.info("FID %.3f, KID %.5f +- %.5f (%d samples against %d %s images); wrote %s", scores["fid"],
                 scores["kid"], scores["kid_std"], scores["n_samples"], scores["n_reference"], source,
                 folder / "metrics.json")
    _write_neighbours(samples, reference, extractor, cache, source, folder)
    return metrics


def _my_batches(folder, n_batches):
    """This rank's share of the batches still missing from the export: dealt in turn over the ranks, so that the
    shares differ by at most one batch also when an export is resumed (dealing all batches by ``k % world_size``
    would leave a rank whose batches are done waiting at the final barrier for the others' whole remaining work).
    Every rank lists the folder before any rank draws (a barrier after the listing), so all deal the same list."""
    missing = [k for k in range(n_batches) if not (Path(folder) / "batches" / f"batch_{k:06d}.npy").is_file()]
    barrier()
    return missing[rank()::world_size()]


N_NEIGHBOUR_QUERIES = 10        # the first samples shown with their nearest training images
N_NEIGHBOURS = 5


def _reference_pixels(reference, like):
    """All reference images as one uint8 array laid out like the samples ``like`` (N, H, W, C)."""
    from evaluation.reference import _item_to_uint8
    images = np.stack([_item_to_uint8(reference[i]) for i in range(len(reference))])
    if images.ndim == 3:
        images = images[..., None]
    h, w, c = like.shape[1:]
    if images.shape[1:] == (c, h, w) and images.shape[1:] != (h, w, c):
        images = images.transpose(0, 2, 3, 1)
    if images.shape[1:] != (h, w, c):
        raise UserError(f"reference images have shape {images.shape[1:]}, samples {(h, w, c)}")
    return np.ascontiguousarray(images)


def _feature_rows(ref, n_reference):
    """Which reference images the cached feature rows are (``evaluation.reference.feature_rows``)."""
    rows = feature_rows(n_reference, ref["meta"]["max_features"])
    if len(rows) != len(ref["features"]):
        raise RuntimeError(f"cached features have {len(ref['features'])} rows, expected {len(rows)}")
    return rows


def _write_neighbours(samples, reference, extractor, cache, source, folder):
    """neighbours.json and neighbours.png: for the first ``N_NEIGHBOUR_QUERIES`` samples, their ``N_NEIGHBOURS``
    L2-nearest reference images (1) in pixel space ([0, 1] pixels, flattened), searched over the whole reference
    set, and (2) in the extractor's feature space, searched over the reference images whose features the statistics
    cache holds (all of them, or its fixed subset of ``max_features``: features already computed for KID, so the
    search costs no extra pass of the network over the data).  Indices are into the reference set.  For scale, each
    space also gets the median distance between a reference image and its nearest other reference image (over a
    fixed subset of 200 of them); samples much closer to their neighbours than that suggest memorisation."""
    from evaluation.neighbours import median_nearest_distance, nearest_neighbours
    from evaluation.reference import reference_statistics
    from runners.figures import plot_neighbours
    start = time.perf_counter()
    queries = samples[:min(N_NEIGHBOUR_QUERIES, len(samples))]
    pixels = _reference_pixels(reference, samples)
    k = min(N_NEIGHBOURS, len(pixels))
    pix_i, pix_d = nearest_neighbours(queries, pixels, k=k)
    ref = reference_statistics(reference, extractor, cache, source=source)                  # cached by now
    rows = _feature_rows(ref, len(pixels))
    feats = ref["features"]
    kf = min(N_NEIGHBOURS, len(feats))
    f_local, feat_d = nearest_neighbours(np.asarray(extractor(queries), dtype=np.float64), feats, k=kf)
    feat_i = rows[f_local]
    report = {
        "reference": source, "n_reference": len(pixels), "k": k, "n_queries": len(queries),
        "queries": "the first samples of samples.npz",
        "pixel": {"space": "pixels in [0, 1], flattened (H * W * C values)", "searched": len(pixels),
                  "indices": pix_i.tolist(), "distances": pix_d.tolist(),
                  "reference_median_nn_distance": median_nearest_distance(pixels)},
        "feature": {"space": f"{extractor.name} features ({extractor.dim}-d)", "searched": len(feats),
                    "indices": feat_i.tolist(), "distances": feat_d.tolist(),
                    "reference_median_nn_distance": median_nearest_distance(feats)},
    }
    (folder / "neighbours.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_neighbours(queries, pixels[pix_i], pix_d, pixels[feat_i], feat_d, folder / "neighbours.png",
                    title=f"nearest {source} images")
    logging.info("nearest training images of %d samples: median distance %.4g in pixels (training images to each "
                 "other: %.4g), %.4g in features (%.4g); wrote %s in %.1f s", len(queries),
                 float(np.median(pix_d[:, 0])), report["pixel"]["reference_median_nn_distance"],
                 float(np.median(feat_d[:, 0])), report["feature"]["reference_median_nn_distance"],
                 folder / "neighbours.json", time.perf_counter() - start)


def _write_pngs(samples, folder):
    from PIL import Image
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(samples):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:06d}.png")
