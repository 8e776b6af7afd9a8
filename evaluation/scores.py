"""The image-quality numbers of a sample set against a reference data set, in one call: FID and KID (and IS when
the extractor gives logits), with the reference statistics cached beside the data."""
import numpy as np

from errors import UserError
from evaluation.metrics import feature_statistics, frechet_distance, inception_score, kernel_inception_distance
from evaluation.reference import reference_statistics


def image_scores(samples, reference, extractor, cache_path, source, kid_subset_size=1000):
    """``samples``: uint8 (N, H, W, C), N >= 2; ``reference``: uint8 images or a data set of (image in [0, 1], label).
    Returns {fid, kid, kid_std, [is, is_std], n_samples, n_reference, extractor, reference_cached}."""
    samples = np.asarray(samples)
    if samples.dtype != np.uint8 or samples.ndim != 4 or len(samples) < 2:
        raise UserError(f"samples must be uint8 (N, H, W, C) with N >= 2, got {samples.dtype} {samples.shape}")
    ref = reference_statistics(reference, extractor, cache_path, source=source)
    features = extractor(samples)
    mu, sigma = feature_statistics(features)
    kid, kid_std = kernel_inception_distance(features, ref["features"], subset_size=kid_subset_size)
    out = {"fid": float(frechet_distance(mu, sigma, ref["mu"], ref["sigma"])), "kid": float(kid),
           "kid_std": float(kid_std), "n_samples": int(len(samples)), "n_reference": int(ref["meta"]["n"]),
           "extractor": extractor.name, "reference_cached": bool(ref["cached"])}
    if getattr(extractor, "has_logits", False):
        splits = min(10, len(samples))        # the standard 10 splits; fewer for a tiny sample set
        out["is"], out["is_std"] = (float(v) for v in inception_score(extractor.logits(samples), splits=splits))
        out["is_splits"] = splits
    return out
