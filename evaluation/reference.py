"""Reference statistics of a data set split, computed once and cached as an ``.npz`` file beside the data.

The cache holds ``mu`` and ``sigma`` (float64, from all N images), ``features`` (float32; all of them, or a fixed
seed-0 random subset of ``max_features`` rows, for KID and precision/recall) and ``meta`` (a JSON string: extractor
name, image size, N, source).  It is reused only when its meta matches the request exactly; otherwise it is
recomputed and replaced.  Files are written to a temporary name in the same folder and renamed (``atomic_write``;
its file has the mode a plain ``open`` gives, following the umask), so a crash never leaves a half-written cache, and
the temporary files of killed processes are removed by the next write.

A cache location that cannot be used (a read-only folder or data root, a folder where the file should be, a full
disk) costs only the caching: the statistics are computed and used without it, with one warning.  A cache file that
is there but damaged (not an ``.npz`` of this format) is one UserError naming it, with what to do: delete it.
"""
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from atomic import atomic_write, remove_stale_temp_files
from errors import UserError
from evaluation.features import images_to_nchw, nchw_view
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


def item_to_uint8(item):
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
            self.images = nchw_view(obj)           # a view: each chunk is converted when it is read
            self.n = len(self.images)
            self.size = tuple(self.images.shape[2:])
        elif hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
            self.images, self.dataset, self.n = None, obj, len(obj)
            if self.n == 0:
                raise UserError("the reference data set is empty (N = 0)")
            self.size = tuple(images_to_nchw(item_to_uint8(obj[0])[None]).shape[2:])
        else:
            raise UserError(f"reference images must be a uint8 array or a data set, got {type(obj).__name__}")
        if self.n < 2:
            raise UserError(f"reference statistics need at least 2 images, got N = {self.n}")

    def chunks(self):
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            if self.images is not None:
                yield self.images[start:stop].contiguous()
                continue
            batch = images_to_nchw(np.stack([item_to_uint8(self.dataset[i]) for i in range(start, stop)]))
            if tuple(batch.shape[2:]) != self.size:
                raise UserError(f"data set images change size: {self.size} then {tuple(batch.shape[2:])}")
            yield batch


_ARRAYS = ("mu", "sigma", "features", "meta")


def _read_cache(path):
    """The cache at ``path`` as a dict, its meta parsed; OSError when it cannot be read (a location problem), a
    one-line UserError naming the file when it is damaged (never numpy's hint about ``allow_pickle``)."""
    def damaged(why, cause=None):
        raise UserError(f"statistics cache {path} is damaged ({why}); delete it, and it is computed again") from cause
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            damaged("a single .npy array, not an .npz archive")
        with z:
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                damaged(f"no {', '.join(missing)}")
            out = {k: z[k] for k in _ARRAYS}
    except UserError:
        raise
    except ValueError as e:             # numpy's words suggest allow_pickle, which would run the file's code
        text = str(e)
        why = ("an array of Python objects" if "Object arrays" in text else "not an .npz archive"
               if "pickled" in text else text.splitlines()[0][:100] if text else type(e).__name__)
        damaged(why, e)
    except (zipfile.BadZipFile, EOFError, KeyError) as e:
        damaged(f"not a complete .npz archive: {str(e).splitlines()[0][:100] if str(e) else type(e).__name__}", e)
    try:
        meta = json.loads(str(out["meta"]))
    except ValueError as e:
        damaged("its meta is not JSON", e)
    if not isinstance(meta, dict):
        damaged("its meta is not a JSON object")
    mu, sigma, features = out["mu"], out["sigma"], out["features"]
    if not all(a.dtype.kind == "f" for a in (mu, sigma, features)) or mu.ndim != 1 or \
            sigma.shape != (len(mu), len(mu)) or features.ndim != 2 or features.shape[1] != len(mu):
        damaged(f"arrays of shapes mu {mu.shape}, sigma {sigma.shape}, features {features.shape} ({mu.dtype}, "
                f"{sigma.dtype}, {features.dtype}) instead of float (D,), (D, D), (n, D)")
    out["meta"] = meta
    return out


def _reason(error):
    """The OS's reason of an OSError (or of the OSError behind an atomic_write UserError)."""
    cause = error if isinstance(error, OSError) else error.__cause__
    return (getattr(cause, "strerror", None) or str(cause or error)).strip()


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
    unusable, stale = None, None        # why the cache cannot be used; the meta of a cache made for other data
    if cache_path.is_dir():
        unusable = "it is a folder"
    elif cache_path.is_file():
        try:
            cached = _read_cache(cache_path)
        except OSError as e:
            unusable = f"it cannot be read: {_reason(e)}"
        else:
            if cached["meta"] == meta:
                return {"mu": cached["mu"], "sigma": cached["sigma"],
                        "features": cached["features"].astype(np.float64), "meta": meta, "cached": True}
            stale = cached["meta"]
            log.info("statistics cache %s was made for %s; recomputing it for %s", cache_path, stale, meta)
    feats = np.empty((data.n, extractor.dim), dtype=np.float64)      # filled chunk by chunk, never copied whole
    done = 0
    for chunk in data.chunks():
        f = np.asarray(extractor(chunk), dtype=np.float64)
        if f.shape != (len(chunk), extractor.dim):
            raise UserError(f"extractor {extractor.name} returned features of shape {f.shape} for {len(chunk)} "
                            f"images, expected ({len(chunk)}, {extractor.dim})")
        feats[done:done + len(f)] = f
        done += len(f)
    keep = feats
    if len(feats) > max_features:
        keep = feats[feature_rows(len(feats), max_features)]
    keep = keep.astype(np.float32)
    mu, sigma = feature_statistics(feats, overwrite=True)          # last use of feats: centred in place
    del feats
    if unusable is None:
        meta_array = np.array(json.dumps(meta))
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(cache_path.parent, "*.npz")
            atomic_write(cache_path, lambda f: np.savez(f, mu=mu, sigma=sigma, features=keep, meta=meta_array))
        except (OSError, UserError) as e:   # UserError: atomic_write's, from an OSError
            unusable = f"it cannot be written: {_reason(e)}"
    if unusable is not None:
        kept = "; the stale cache there is left as it is" if stale is not None else ""
        log.warning("statistics cache %s is not used (%s): the statistics were computed without caching and will be "
                    "computed again next time%s", cache_path, unusable, kept)
    return {"mu": mu, "sigma": sigma, "features": keep.astype(np.float64), "meta": meta, "cached": False}


def check_reference_data(config, run_root, extractor=None):
    """For ``--eval``, before any sample is drawn: the data set that the samples will be scored against is there
    (``data.dataset`` under ``data.root``, else ``<run_root>/datasets``), else one UserError line saying where it
    was looked for and that ``data.root`` may be given in --eval's ``--config``.  With ``extractor``, a statistics
    cache that is already there must also be readable: a damaged one is the one-line error of :func:`_read_cache`
    now rather than after the export (an unreadable location only costs the caching, later)."""
    from datasets import data_root, get_dataset
    try:
        get_dataset(config.data, run_root)
    except UserError as e:
        raise UserError(f"the reference data of --eval is missing: {e} (--eval's --config may set data.root)") from e
    if extractor is not None:
        path = stats_cache_path(data_root(config.data, run_root), config.data.dataset, config.eval.reference_split,
                                extractor)
        if path.is_file():
            try:
                _read_cache(path)
            except OSError:
                pass                    # not readable: computed without the cache later, with its one warning
