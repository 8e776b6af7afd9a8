"""``--test`` of an image runner: chains of the runner's sampler from its start into ``-o``: ``samples.png``,
``samples.pth`` (N, C, H, W) in [0, 1] and ``movie.gif``; with ``sampling.inpainting``, completions of test images
where ``sampling.inpainting_mask`` hides them (``inpainting.png``, ``inpainting.pth``, ``inpainting.json``)."""
import logging
from pathlib import Path

import torch

from atomic import write_json
from datasets import get_dataset
from errors import UserError
from evaluation.inpainting import inpainting_errors
from reports.outputs import prepare_output_folder, sample_to_folder
from sampling import inpainting
from sampling.masks import inpainting_mask


def sample(ctx, runner):
    choice = runner.sampler()
    if choice is None:
        raise UserError(f"--test of {ctx.runner}: it has no image sampler")
    cfg, d, smp = runner.config, runner.config.data, runner.config.sampling
    model, _ = runner.trained_model(Path(ctx.log) / "checkpoint.pth")
    score = runner.score_fn(model)
    folder = prepare_output_folder(ctx.image_folder, ctx.overwrite)
    if ctx.overwrite:
        remove_outputs(folder)
    nrow = max(1, round(smp.n_samples ** 0.5))
    shape = (d.channels, d.image_size, d.image_size)

    run, grid, hidden = choice.run, None, None
    if smp.inpainting:
        run, grid, hidden = inpainting_task(ctx, cfg, choice, nrow, shape, runner.device)
    x = choice.start(nrow * nrow if smp.inpainting else smp.n_samples)

    def chains(x0, callback):
        last = {}
        x = run(score, x0, callback=lambda info: (last.update(info), callback(info)))
        if "nfe" in last:
            logging.info("%s: %s network evaluations", choice.settings["method"], last["nfe"])
        return x

    logging.info("sampling with %s", choice.settings)
    samples = sample_to_folder(chains, x, total=choice.total, folder=folder, data_cfg=d, sampling_cfg=smp,
                               nrow=nrow, desc=choice.name, name="inpainting" if smp.inpainting else "samples",
                               grid=grid, hint=choice.hint)
    if smp.inpainting:
        refs, mask = hidden
        errors = {"mask": smp.inpainting_mask, "fraction": smp.inpainting_fraction, "seed": ctx.seed,
                  **inpainting_errors(samples.view(nrow, nrow, *shape), refs, mask)}
        write_json(folder / "inpainting.json", errors)
        logging.info("inpainting (%s mask): MSE %.5f, PSNR %s dB on the hidden pixels; wrote %s",
                     smp.inpainting_mask, errors["mse"] if errors["mse"] is not None else float("nan"),
                     errors["psnr"], folder / "inpainting.json")


def inpainting_task(ctx, cfg, choice, nrow, shape, device):
    """Each of ``nrow`` test images completed ``nrow`` times where ``sampling.inpainting_mask`` hides it (official:
    the left half of the columns observed); the mask is built without the global random state.  Returns the
    constrained sampler ``run(score, x, callback)``, the grid of the PNG (one row per reference: the image, the
    masked input, its completions) and (references, mask) on the CPU for the errors."""
    d, smp = cfg.data, cfg.sampling
    _, test = get_dataset(d, ctx.run)
    if nrow > len(test):
        raise UserError(f"inpainting completes sqrt(sampling.n_samples) = {nrow} test images, but the "
                        f"{d.dataset} test set has {len(test)}; lower sampling.n_samples")
    refs = torch.stack([test[i][0] for i in range(nrow)]).to(device)              # (k, C, H, W)
    reference = refs.repeat_interleave(nrow, dim=0)                               # (k*k, C, H, W)
    mask = inpainting_mask(smp.inpainting_mask, shape, smp.inpainting_fraction, seed=ctx.seed)
    mask = mask.to(reference).expand_as(reference)
    constrained = inpainting(choice.sample, mask, reference)
    mask_cpu, refs_cpu = mask[0].cpu(), refs.cpu()
    masked = refs_cpu * mask_cpu + 0.5 * (1 - mask_cpu)                           # hidden: mid grey

    def run(score, x, callback=None):
        return constrained(score, x, choice.sigmas, callback=callback)

    def grid(samples):
        rows = torch.cat([refs_cpu.unsqueeze(1), masked.unsqueeze(1), samples.view(nrow, nrow, *shape)], 1)
        return rows.flatten(0, 1), nrow + 2
    return run, grid, (refs_cpu, mask_cpu)


OUTPUTS = ("samples.png", "samples.pth", "inpainting.png", "inpainting.pth", "inpainting.json", "movie.gif",
           "image_*.png", "image_raw_*.pth")


def remove_outputs(folder):
    """--overwrite: the files an earlier --test wrote into ``folder`` (its frames too) go, so that none of another
    chain stays beside this one's; other files are left alone."""
    for pattern in OUTPUTS:
        for path in folder.glob(pattern):
            if path.is_file():
                path.unlink()
