"""Sample export at scale: N samples drawn in batches into one ``samples.npz`` (uint8, NHWC: the layout score_sde and
improved-diffusion use).

Batch k is drawn under its own random seed, derived from (seed, k), so the set depends only on (seed, N, batch size):
not on the order the batches are drawn in, on interruptions, or on how many processes share the work.  Every
finished batch is kept as ``batches/batch_<k>.npy`` (written atomically) and skipped when the export runs again, so
an interrupted export continues where it stopped and ends with the same file.  ``export.json`` records what draws
the samples (the checkpoint's step, a SHA-256 of the weights, the sampler settings, the seed); a folder holding
another export's batches (other weights or settings) is refused, or with ``replace`` (--overwrite) started over:
batches of two exports are never mixed.
"""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from atomic import atomic_write, remove_stale_temp_files
from errors import UserError

MANIFEST = "export.json"


def batch_seed(seed, k):
    """The seed of batch k: a well-mixed 63-bit integer from (seed, k) (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def batch_sizes(n, batch_size):
    """Sizes of the batches that make up n samples: full batches, then the remainder."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


DIVERGENCE_HINT = "a smaller sampling.step_lr may help"


def check_diverged(samples, note="", hint=DIVERGENCE_HINT):
    """A UserError ``sampling diverged: ...`` if any of the (N, ...) ``samples`` holds a non-finite value (a chain
    that blew up); ``note`` goes after the count, e.g. what was not written; ``hint``: what to change (the
    sampler's step setting)."""
    bad = int((~torch.isfinite(samples.flatten(1))).any(1).sum())
    if bad:
        raise UserError(f"sampling diverged: {bad} of {len(samples)} samples hold non-finite values{note} ({hint})")


def to_uint8_nhwc(images, hint=DIVERGENCE_HINT):
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8 (round to nearest, as the sample grids do).  Non-finite
    values (a diverged chain) are an error, not black pixels (``hint``: see :func:`check_diverged`)."""
    check_diverged(images, hint=hint)
    return images.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def start_export(folder, settings, replace=False):
    """Create ``folder``/batches and its manifest, or check that an existing one is this export's (same settings);
    ``replace``: an export with other settings is removed (its batches, manifest and samples.npz) and started
    over."""
    folder = Path(folder)
    path = folder / MANIFEST
    for stale in (folder, folder / "batches"):      # what a killed export left half-written
        remove_stale_temp_files(stale)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: {e}") from e
        if saved == settings:
            return
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if not replace:
            what = " (drawn by other weights: was the run trained again?)" if "weights" in changed else ""
            raise UserError(f"{folder} holds an export with other settings ({', '.join(changed)}){what}; use another "
                            f"-o or --overwrite")
        logging.info("--overwrite: replacing the export in %s (other %s)", folder, ", ".join(changed))
        if (folder / "batches").is_dir():
            shutil.rmtree(folder / "batches")
        for name in (MANIFEST, "samples.npz"):
            (folder / name).unlink(missing_ok=True)
    (folder / "batches").mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(settings, indent=2) + "\n").encode()))


def export_batches(draw, n, batch_size, seed, folder, batches=None, progress=True):
    """Draw the batches ``batches`` (default: all) of an N-sample export into ``folder``/batches, skipping those
    already there.  ``draw(size) -> uint8 array (size, H, W, C)`` uses the global torch random generators; it is
    called with them seeded by batch_seed(seed, k) and they are restored afterwards.  Returns the batches drawn now."""
    sizes = batch_sizes(n, batch_size)
    todo = [k for k in (range(len(sizes)) if batches is None else batches)
            if not (Path(folder) / "batches" / f"batch_{k:06d}.npy").is_file()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for k in tqdm(todo, desc="export", unit="batch", disable=not progress or not todo, dynamic_ncols=True):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed(seed, k))
            images = np.asarray(draw(sizes[k]))
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != sizes[k]:
            raise ValueError(f"draw({sizes[k]}) returned {images.dtype} {images.shape}, not uint8 (N, H, W, C)")
        atomic_write(Path(folder) / "batches" / f"batch_{k:06d}.npy", lambda f, a=images: np.save(f, a))
    return todo


def assemble(folder, n, batch_size):
    """Concatenate every batch into ``folder``/samples.npz (key ``samples``, uint8 NHWC); returns its path."""
    folder = Path(folder)
    parts = []
    for k, size in enumerate(batch_sizes(n, batch_size)):
        path = folder / "batches" / f"batch_{k:06d}.npy"
        try:
            part = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"batch {k} of the export is missing or unreadable ({path}): {e}") from e
        if part.dtype != np.uint8 or part.ndim != 4 or len(part) != size:
            raise UserError(f"{path} is not batch {k} of this export ({part.dtype} {part.shape})")
        parts.append(part)
    samples = np.concatenate(parts)
    out = folder / "samples.npz"
    atomic_write(out, lambda f: np.savez(f, samples=samples))
    return out
