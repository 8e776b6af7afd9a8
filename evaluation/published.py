"""Published reference statistics: the files papers' FIDs are computed against, read (``eval.reference_stats``) and
written (``tools/fid_stats.py``), recognised by their keys.

- ``mu`` + ``sigma`` (the mean (d,) and covariance (d, d) of Inception pool features): TTUR's
  ``fid_stats_cifar10_train.npz`` (the NCSN paper's FID of 25.32 was computed against it with TTUR's code),
  pytorch-fid's ``--save-stats`` files and EDM's ``fid-refs/*.npz``.  FID only: KID and precision/recall need the
  features themselves.
- ``pool_3`` (the features (N, d) of every reference image): score_sde's ``*_stats.npz``; FID, KID and
  precision/recall.

Everything else is refused in one line naming the formats this reads.  A file is identified by its SHA-256.
"""
import hashlib
from pathlib import Path

import numpy as np

from atomic import atomic_write
from errors import UserError
from evaluation.metrics import feature_statistics

FORMATS = {"mu-sigma": "mu and sigma (TTUR, pytorch-fid, EDM)", "pool_3": "pool_3 features (score_sde)"}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_statistics_file(path, dim):
    """``{'mu', 'sigma', 'features' (or None), 'meta', 'cached', 'file'}`` of a published statistics file for
    features of length ``dim``, in the form of :func:`evaluation.reference.reference_statistics`; ``file`` records
    its path, format and SHA-256 for metrics.json."""
    path = Path(path).expanduser()
    accepted = " or ".join(FORMATS.values())
    if not path.is_file():
        raise UserError(f"eval.reference_stats {path}: {'is a folder' if path.is_dir() else 'not found'}; it must "
                        f"be a .npz statistics file holding {accepted}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"eval.reference_stats {path} is not a .npz statistics file ({e}); it must hold "
                        f"{accepted}") from e
    if "mu" in arrays and "sigma" in arrays:
        fmt, mu, sigma, features = "mu-sigma", arrays["mu"], arrays["sigma"], None
        if mu.shape != (dim,) or sigma.shape != (dim, dim):
            raise UserError(f"eval.reference_stats {path}: mu {mu.shape} and sigma {sigma.shape} do not fit the "
                            f"extractor's {dim} features (expected ({dim},) and ({dim}, {dim}))")
        n = None
    elif "pool_3" in arrays:
        fmt, features = "pool_3", arrays["pool_3"]
        if features.ndim != 2 or features.shape[1] != dim or len(features) < 2:
            raise UserError(f"eval.reference_stats {path}: pool_3 has shape {features.shape}, expected (N >= 2, "
                            f"{dim}) for the extractor's {dim} features")
        features = features.astype(np.float64)
        n = len(features)
    else:
        raise UserError(f"eval.reference_stats {path} holds {', '.join(sorted(arrays)) or 'no arrays'}; it must "
                        f"hold {accepted}")
    for name, value in (("mu", mu if fmt == "mu-sigma" else None), ("sigma", sigma if fmt == "mu-sigma" else None),
                        ("pool_3", features)):
        if value is not None and not (np.issubdtype(value.dtype, np.number) and np.isfinite(value).all()):
            raise UserError(f"eval.reference_stats {path}: {name} holds non-finite or non-numeric values")
    if fmt == "pool_3":
        mu, sigma = feature_statistics(features)
    record = {"path": str(path), "format": FORMATS[fmt], "sha256": sha256_of(path)}
    return {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64), "features": features,
            "meta": {"n": n}, "cached": False, "file": record}


def write_statistics_file(statistics, path, fmt):
    """Write reference statistics (``reference_statistics``' dict) as a published file: ``fmt`` 'mu-sigma' (TTUR /
    pytorch-fid: ``mu``, ``sigma``) or 'pool_3' (score_sde: the cached features)."""
    if fmt == "mu-sigma":
        arrays = {"mu": statistics["mu"], "sigma": statistics["sigma"]}
    elif fmt == "pool_3":
        arrays = {"pool_3": np.asarray(statistics["features"], np.float32)}
    else:
        raise UserError(f"unknown statistics format {fmt!r}; one of {', '.join(FORMATS)}")
    atomic_write(path, lambda f: np.savez(f, **arrays))
