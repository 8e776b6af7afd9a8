"""``--eval``: export ``eval.n_samples`` samples of the runner's sampler into ``-o``/samples.npz (resumable, seeded
per batch, split over torchrun processes), score them against the run's data set (FID, KID; IS when the Inception
weights have logits; with ``eval.bpd`` also bits/dim of test images through the probability-flow ODE) and write
``metrics.json`` once, a grid of the first samples, and their nearest training images (``neighbours.json``,
``neighbours.png``: the memorisation check)."""
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from atomic import write_json
from datasets import data_root, data_transform, get_dataset, inverse_data_transform
from errors import UserError
from evaluation import inception_features, stats_cache_path
from evaluation.export import MANIFEST, assemble, batch_sizes, export_batches, start_export, to_uint8_nhwc
from evaluation.likelihood import bits_per_dim, gaussian_log_density, ode_log_likelihood
from evaluation.neighbours import neighbour_report, reference_pixels
from evaluation.published import load_statistics_file
from evaluation.reference import check_reference_data, reference_statistics
from evaluation.scores import image_scores
from reports.figures import plot_neighbours
from reports.outputs import prepare_output_folder, save_grid, save_image
from sampling import interpolated_score, prior_mean
from sampling.schedules import host_sigmas
from training.checkpoint import uses_ema, weights_digest
from training.distributed import barrier, is_main, main_process_first, rank, world_size


def evaluate(ctx, runner):
    """Export, score and report.  ``ema`` in the manifest and metrics.json: whether the samples come from the
    checkpoint's EMA weights."""
    choice = runner.sampler()
    if choice is None:
        raise UserError(f"--eval is not available for {ctx.runner}: it has no image sampler to evaluate")
    cfg, d, e = runner.config, runner.config.data, runner.config.eval
    bpd = e.bpd and runner.likelihood
    if e.bpd and not bpd:
        logging.warning("eval.bpd is ignored for %s: bits/dim needs a network conditioned on the noise levels",
                        ctx.runner)
    if bpd:
        check_bpd(cfg)
    model, state = runner.trained_model(Path(ctx.log) / "checkpoint.pth")
    score = runner.score_fn(model)
    if e.n_samples < 2:
        raise UserError(f"eval.n_samples must be at least 2 to compute FID and KID, got {e.n_samples}")
    folder = Path(ctx.image_folder)
    settings = {"n_samples": e.n_samples, "batch_size": e.batch_size, "seed": ctx.seed, "step": state.get("step"),
                "ema": uses_ema(state), "weights": weights_digest(model), "run": str(Path(ctx.log)),
                "sampling": choice.record}
    # eval.n_seeds independent sample sets: the first in -o itself, the others in -o/seed_<seed>/
    sets = [(ctx.seed, folder)] + [(ctx.seed + k, folder / f"seed_{ctx.seed + k}") for k in range(1, e.n_seeds)]

    def prepare(main):              # rank 0: weights and folder checked before any sample is drawn
        if not main:
            return True
        extractor = inception_features(weights=e.inception_weights, allow_download=e.allow_download,
                                       device=str(runner.device))
        check_reference_data(cfg, ctx.run, extractor)      # the data the samples are scored against is there
        if e.reference_stats:                               # a published file: checked before any sample is drawn
            load_statistics_file(e.reference_stats, extractor.dim)
        start_export(eval_folder(folder, ctx.overwrite), settings, replace=ctx.overwrite)
        for seed, other in sets[1:]:
            start_export(other, {**settings, "seed": seed}, replace=ctx.overwrite)
        return extractor
    extractor = main_process_first(prepare)
    if extractor is None:
        return                      # rank 0 failed, and says why

    draw, nfes = drawing(choice, score, d)
    for seed, where in sets:
        export_set(draw, e.n_samples, e.batch_size, seed, where)
    if not is_main():
        return
    path = assemble(folder, e.n_samples, e.batch_size)
    samples = np.load(path)["samples"]                                            # (N, H, W, C) uint8
    grid = torch.from_numpy(samples[:100]).permute(0, 3, 1, 2).float() / 255
    save_grid(grid, folder / "samples.png", nrow=max(1, round(len(grid) ** 0.5)))
    if e.save_png:
        write_pngs(samples, folder / "png")

    reference, source = reference_set(cfg, ctx.run)
    cache = stats_cache_path(data_root(d, ctx.run), d.dataset, e.reference_split, extractor)
    published = load_statistics_file(e.reference_stats, extractor.dim) if e.reference_stats else None
    against = dict(kid_subset_size=e.kid_subset_size, statistics=published)
    scores = image_scores(samples, reference, extractor, cache, source, with_precision=True, **against)
    sampling = {**choice.record, "nfe_per_batch": nfes} if choice.settings["method"] == "ode" else choice.record
    metrics = {**scores, "reference": source, "reference_statistics": str(cache), "samples": str(path),
               "checkpoint_step": state.get("step"), "ema": uses_ema(state), "seed": ctx.seed,
               "batch_size": e.batch_size, "sampling": sampling}
    if published is not None:       # the numbers are against the published file, not the run's data
        metrics.update(reference=published["file"]["path"], reference_statistics=published["file"]["path"],
                       reference_stats=published["file"])
    logging.info("FID %.3f%s (%d samples against %s)", scores["fid"], "" if scores["kid"] is None else
                 f", KID {scores['kid']:.5f} +- {scores['kid_std']:.5f}", scores["n_samples"], metrics["reference"])
    if len(sets) > 1:               # the protocol of EDM: the minimum (and the mean) over independent seed sets
        per_seed = [scores] + [image_scores(np.load(assemble(where, e.n_samples, e.batch_size))["samples"],
                                            reference, extractor, cache, source, **against)
                               for _, where in sets[1:]]
        fids = [s["fid"] for s in per_seed]
        metrics.update(seeds=[seed for seed, _ in sets], fid_per_seed=fids, kid_per_seed=[s["kid"] for s in per_seed],
                       fid_min=min(fids), fid_mean=float(np.mean(fids)))
        logging.info("FID over %d seeds: min %.3f, mean %.3f (%s)", len(fids), min(fids), np.mean(fids),
                     ", ".join(f"{v:.3f}" for v in fids))
    if e.floor:
        metrics["floor"] = real_data_floor(cfg, ctx.run, len(samples), samples, reference, extractor, cache, source,
                                           published)
    if bpd:
        metrics.update(bpd_of_test_set(cfg, model, choice.sigmas, ctx, runner.device))
    write_json(folder / "metrics.json", metrics)
    logging.info("wrote %s", folder / "metrics.json")
    write_neighbours(samples, reference, extractor, cache, source, folder)


def export_set(draw, n, batch_size, seed, folder):
    """Every process draws its share of the missing batches of the export of ``n`` samples under ``seed`` into
    ``folder``; returns when all have."""
    n_batches = len(batch_sizes(n, batch_size))
    mine = my_batches(folder, n_batches)
    start = time.perf_counter()
    drawn = export_batches(draw, n, batch_size, seed, folder, batches=mine, progress=is_main())
    logging.info("seed %d: drew %d of %d batches in %.1f s (the rest were there from an earlier run%s)", seed,
                 len(drawn), n_batches, time.perf_counter() - start,
                 " or drawn by the other processes" if world_size() > 1 else "")
    barrier()


def real_data_floor(cfg, run, n, like, reference, extractor, cache, source, published=None):
    """The scores of ``n`` held-out real images (the first ``n`` of the split that is not ``eval.reference_split``)
    against the same reference: what a perfect sampler would reach at this N (FID is biased upwards at small N)."""
    e = cfg.eval
    train, test = get_dataset(cfg.data, run)
    split, held = ("test", test) if e.reference_split == "train" else ("train", train)
    m = min(n, len(held))
    if m < 2:
        logging.warning("eval.floor: the %s split has %d images; no real-data floor", split, len(held))
        return None
    real = reference_pixels(Subset(held, range(m)), like)
    s = image_scores(real, reference, extractor, cache, source, kid_subset_size=e.kid_subset_size,
                     with_precision=True, statistics=published)
    floor = {"split": split, "n": m, **{k: s[k] for k in ("fid", "kid", "kid_std", "precision", "recall") if k in s}}
    logging.info("real-data floor: FID %.3f of %d %s images against the same reference", s["fid"], m, split)
    return floor


def drawing(choice, score, data_cfg):
    """``draw(size) -> uint8 (size, H, W, C)``: the export's draw of ``size`` samples of ``choice`` with the score
    ``score`` from the global RNG (seeded per batch by the export), and the list it appends each batch's network
    evaluations to (the ODE's adaptive solver: they differ from batch to batch)."""
    nfes = []

    def draw(size):
        last = {}
        x = choice.run(score, choice.start(size), callback=last.update)
        nfes.append(last.get("nfe"))
        if choice.settings["method"] == "ode":
            logging.info("probability-flow ODE: %s network evaluations for a batch of %d", last.get("nfe"), size)
        return to_uint8_nhwc(inverse_data_transform(x, data_cfg), hint=choice.hint)
    return draw, nfes


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


def my_batches(folder, n_batches):
    """This rank's share of the batches still missing from the export: dealt in turn over the ranks, so that the
    shares differ by at most one batch also when an export is resumed (dealing all batches by ``k % world_size``
    would leave a rank whose batches are done waiting at the final barrier for the others' whole remaining work).
    Every rank lists the folder before any rank draws (a barrier after the listing), so all deal the same list."""
    missing = [k for k in range(n_batches) if not (Path(folder) / "batches" / f"batch_{k:06d}.npy").is_file()]
    barrier()
    return missing[rank()::world_size()]


def write_neighbours(samples, reference, extractor, cache, source, folder):
    """neighbours.json and neighbours.png: the nearest reference images of the first samples, in pixels and in
    features (``evaluation.neighbours.neighbour_report``)."""
    start = time.perf_counter()
    statistics = reference_statistics(reference, extractor, cache, source=source)          # cached by now
    report, queries, pixels, (pix_i, pix_d), (feat_i, feat_d) = neighbour_report(samples, reference, extractor,
                                                                                 statistics, source)
    write_json(folder / "neighbours.json", report)
    plot_neighbours(queries, pixels[pix_i], pix_d, pixels[feat_i], feat_d, folder / "neighbours.png",
                    title=f"nearest {source} images")
    logging.info("nearest training images of %d samples: median distance %.4g in pixels (training images to each "
                 "other: %.4g), %.4g in features (%.4g); wrote %s in %.1f s", len(queries),
                 float(np.median(pix_d[:, 0])), report["pixel"]["reference_median_nn_distance"],
                 float(np.median(feat_d[:, 0])), report["feature"]["reference_median_nn_distance"],
                 folder / "neighbours.json", time.perf_counter() - start)


def write_pngs(samples, folder):
    from PIL import Image
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(samples):
        save_image(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), folder / f"{i:06d}.png")
def check_bpd(config):
    """Refuse eval.bpd where it is not defined, before any sample is drawn."""
    if config.eval.bpd and config.data.logit_transform:
        raise UserError("eval.bpd needs data.logit_transform false (the logit's Jacobian is not accounted for)")


def bpd_of_test_set(config, model, sigmas, ctx, device):
    """Bits/dim of the first ``eval.bpd_n`` test images (uniformly dequantised as in training, with the random
    numbers of ``ctx.seed``) through the probability-flow ODE, in batches of ``eval.bpd_batch_size`` (batch k seeded
    with ``seed + k``); returns the record for metrics.json."""
    e, d, seed = config.eval, config.data, ctx.seed
    _, test = get_dataset(d, ctx.run)
    n = min(e.bpd_n, len(test))
    sigma_list = host_sigmas(sigmas)
    score_at = interpolated_score(model, sigma_list)
    mean = prior_mean(d.logit_transform)

    def prior(z):
        return gaussian_log_density(z, mean, sigma_list[0])
    values, nfes = [], []
    bar = tqdm(total=n, desc="bits/dim", unit="image", dynamic_ncols=True, mininterval=1.0)
    try:
        for k, start in enumerate(range(0, n, e.bpd_batch_size)):     # not eval.batch_size: the ODE takes gradients
            images = torch.stack([test[i][0] for i in range(start, min(n, start + e.bpd_batch_size))]).to(device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + k)
                x = data_transform(images, d)
            done = sum(nfes)                                          # evaluations of the batches before
            logp, nfe = ode_log_likelihood(score_at, x, sigma_list[-1], sigma_list[0], prior,
                                           method=config.sampling.ode_method, rtol=e.bpd_rtol, atol=e.bpd_atol,
                                           probe=e.bpd_probe, seed=seed + k, max_nfe=e.bpd_max_nfe,
                                           callback=lambda count, done=done: bar.set_postfix(nfe=done + count,
                                                                                             refresh=False))
            values.append(bits_per_dim(logp.double(), x[0].numel()).cpu())
            nfes.append(nfe)
            bar.update(len(x))
            logging.info("bits/dim: %d of %d test images, %d network evaluations for this batch", start + len(x), n,
                         nfe)
    finally:
        bar.close()
    bpd = torch.cat(values)
    record = {"bpd": float(bpd.mean()), "bpd_std_error": float(bpd.std() / len(bpd) ** 0.5) if len(bpd) > 1 else None,
              "bpd_n": n, "bpd_batch_size": e.bpd_batch_size, "bpd_nfe_per_batch": nfes, "bpd_probe": e.bpd_probe,
              "bpd_rtol": e.bpd_rtol,
              "bpd_atol": e.bpd_atol, "bpd_ode_method": config.sampling.ode_method, "bpd_prior_mean": mean,
              "bpd_sigma_range": [sigma_list[-1], sigma_list[0]]}
    logging.info("bits/dim %.4f +- %.4f on %d test images (the model at sigma_L = %g)", record["bpd"],
                 record["bpd_std_error"] or 0.0, n, sigma_list[-1])
    return record
