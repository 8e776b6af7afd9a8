"""Reference statistics of a data set split, computed once and cached as an ``.npz`` file beside the data.

The cache holds ``mu`` and ``sigma`` (float64, from all N images), ``features`` (float32; all of them, or a fixed
seed-0 random subset of ``max_features`` rows, for KID and precision/recall) and ``meta`` (a JSON string: extractor
name, image size, N, source).  It is reused only when its meta matches the request exactly; otherwise it is
recomputed and replaced.  Files are written to a temporary name in the same folder and renamed, so a crash never
leaves a half-written cache.
"""
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from atomic import atomic_write
from errors import UserError
from evaluation.features import images_to_nchw
from evaluation.metrics import feature_statistics

FORMAT = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
log = logging.getLogger(__name__)


def feature_rows(n, max_features):
    """Which of n reference images keep their features in the cache: all of them, or a fixed (seed 0) sorted subset
    of ``max_features``.  The one definition of that subset (the nearest-neighbour search maps rows back with it)."""
    if n <= max_features:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_features, replace=False))


def stats_cache_path(data_root, dataset, split, extractor):
    """Where the statistics of ``dataset``/``split`` under ``extractor`` live: ``<data_root>/fid_stats/
    <dataset>-<split>-<extractor.name>.npz``."""
    for what, name in (("data set", dataset), ("split", split), ("extractor name", extractor.name)):
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise UserError(f"{what} {name!r} cannot name a statistics file (letters, digits, _ . + - only)")
    return Path(data_root) / "fid_stats" / f"{dataset}-{split}-{extractor.name}.npz"


def _item_to_uint8(item):
    """One data set item ((image, label) or image; image a [0, 1] float tensor (C, H, W), a uint8 tensor or array,
    or a PIL image) as a uint8 array (C, H, W) or (H, W, C) as it comes."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, torch.Tensor):
        if item.dtype == torch.uint8:
            return item.numpy()
        if not item.is_floating_point():
            raise UserError(f"data set images must be float tensors in [0, 1] or uint8, got {item.dtype}")
        return (item.detach().float() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if hasattr(item, "convert"):  # PIL image
        return np.asarray(item.convert("RGB"), dtype=np.uint8)
    if isinstance(item, np.ndarray):
        return item
    raise UserError(f"data set items must be images or (image, label) pairs, got {type(item).__name__}")


class _Source:
    """An array of images or a data set, read in chunks of uint8 (N, 3, H, W) tensors."""

    def __init__(self, images_or_dataset, chunk=1000):
        self.chunk = chunk
        obj = images_or_dataset
        if isinstance(obj, (np.ndarray, torch.Tensor)):
            self.images = images_to_nchw(obj)
            self.n = len(self.images)
            self.size = tuple(self.images.shape[2:])
        elif hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
            self.images, self.dataset, self.n = None, obj, len(obj)
            if self.n == 0:
                raise UserError("the reference data set is empty (N = 0)")
            self.size = tuple(images_to_nchw(_item_to_uint8(obj[0])[None]).shape[2:])
        else:
            raise UserError(f"reference images must be a uint8 array or a data set, got {type(obj).__name__}")
        if self.n < 2:
            raise UserError(f"reference statistics need at least 2 images, got N = {self.n}")

    def chunks(self):
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            if self.images is not None:
                yield self.images[start:stop]
                continue
            batch = images_to_nchw(np.stack([_item_to_uint8(self.dataset[i]) for i in range(start, stop)]))
            if tuple(batch.shape[2:]) != self.size:
                raise UserError(f"data set images change size: {self.size} then {tuple(batch.shape[2:])}")
            yield batch


def _read_cache(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in ("mu", "sigma", "features", "meta")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"statistics cache {path} is unreadable ({e}); delete it to recompute") from e
    out["meta"] = json.loads(str(out["meta"]))
    return out


def reference_statistics(images_or_dataset, extractor, cache_path, source="", max_features=10000):
    """``{'mu', 'sigma', 'features', 'meta', 'cached'}`` of the reference images under ``extractor``.

    ``images_or_dataset``: uint8 images (see ``features.images_to_nchw``) or a data set of ``(image, label)`` with
    [0, 1] float images; ``cache_path``: the ``.npz`` to reuse or write (``stats_cache_path`` names one beside the
    data); ``source``: free text naming the data (data set and split), part of the cache key.  A cache whose meta
    (extractor name, image size, N, source, max_features) differs is recomputed and replaced."""
    cache_path = Path(cache_path)
    if cache_path.suffix != ".npz":
        raise UserError(f"statistics cache {cache_path} must be an .npz file")
    if max_features < 2:
        raise UserError(f"max_features must be at least 2, got {max_features}")
    data = _Source(images_or_dataset)
    meta = {"format": FORMAT, "extractor": extractor.name, "dim": int(extractor.dim), "image_size": list(data.size),
            "n": data.n, "source": str(source), "max_features": int(max_features)}
    if cache_path.is_file():
        cached = _read_cache(cache_path)
        if cached["meta"] == meta:
            return {"mu": cached["mu"], "sigma": cached["sigma"], "features": cached["features"].astype(np.float64),
                    "meta": meta, "cached": True}
        log.warning("statistics cache %s was made for %s; recomputing it for %s", cache_path, cached["meta"], meta)
    feats = np.concatenate([np.asarray(extractor(chunk), dtype=np.float64) for chunk in data.chunks()])
    if feats.shape != (data.n, extractor.dim):
        raise UserError(f"extractor {extractor.name} returned features of shape {feats.shape}, expected "
                        f"({data.n}, {extractor.dim})")
    mu, sigma = feature_statistics(feats)
    keep = feats
    if len(feats) > max_features:
        keep = feats[feature_rows(len(feats), max_features)]
    keep = keep.astype(np.float32)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    meta_array = np.array(json.dumps(meta))
    atomic_write(cache_path, lambda f: np.savez(f, mu=mu, sigma=sigma, features=keep, meta=meta_array))
    return {"mu": mu, "sigma": sigma, "features": keep.astype(np.float64), "meta": meta, "cached": False}
