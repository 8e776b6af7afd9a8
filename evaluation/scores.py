"""The image-quality numbers of a sample set against a reference data set, in one call: FID and KID (and IS when
the extractor gives logits), with the reference statistics cached beside the data."""
import numpy as np

from errors import UserError
from evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from evaluation.reference import reference_statistics

PRC_K = 3                       # the k-NN radius of improved precision and recall (Kynkaanniemi et al. 2019)


def image_scores(samples, reference, extractor, cache_path, source, kid_subset_size=1000, with_precision=False,
                 statistics=None):
    """``samples``: uint8 (N, H, W, C), N >= 2; ``reference``: uint8 images or a data set of (image in [0, 1], label).
    Memory beyond the samples grows with N only by the features (N x dim float64) and, with logits, the logits.
    Returns {fid, kid, kid_std, [is, is_std], n_samples, n_reference, extractor, reference_cached}; with
    ``with_precision`` also improved precision and recall (k = PRC_K) against the reference features of the cache
    (all of them, or its fixed subset of ``max_features``), where both sets have more than k images.  ``statistics``
    (a published file's, ``evaluation.published.load_statistics_file``) replaces the reference and its cache; KID
    and precision/recall are left out (None) when it holds no features."""
    samples = np.asarray(samples)
    if samples.dtype != np.uint8 or samples.ndim != 4 or len(samples) < 2:
        raise UserError(f"samples must be uint8 (N, H, W, C) with N >= 2, got {samples.dtype} {samples.shape}")
    ref = statistics if statistics is not None else reference_statistics(reference, extractor, cache_path,
                                                                          source=source)
    features = extractor(samples)               # streamed batch by batch: only these (N, dim) floats grow with N
    kid = kid_std = prc = None
    if ref["features"] is not None:
        kid, kid_std = (float(v) for v in kernel_inception_distance(features, ref["features"],
                                                                    subset_size=kid_subset_size))
    if with_precision and ref["features"] is not None and min(len(features), len(ref["features"])) > PRC_K:
        prc = precision_recall(features, ref["features"], k=PRC_K)
    mu, sigma = feature_statistics(features, overwrite=True)       # last use of the features: centred in place
    del features
    n_reference = ref["meta"]["n"]
    out = {"fid": float(frechet_distance(mu, sigma, ref["mu"], ref["sigma"])), "kid": kid, "kid_std": kid_std,
           "n_samples": int(len(samples)), "n_reference": None if n_reference is None else int(n_reference),
           "extractor": extractor.name, "reference_cached": bool(ref["cached"])}
    if prc is not None:
        out.update(precision=float(prc[0]), recall=float(prc[1]), prc_k=PRC_K)
    if getattr(extractor, "has_logits", False):
        splits = min(10, len(samples))        # the standard 10 splits; fewer for a tiny sample set
        out["is"], out["is_std"] = (float(v) for v in inception_score(extractor.logits(samples), splits=splits))
        out["is_splits"] = splits
    return out
