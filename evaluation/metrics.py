"""Metric maths on feature vectors: FID, KID, Inception Score and precision/recall.

The formulas are torch-fidelity's feature-level functions (``fid_statistics_to_metric``,
``kid_features_to_metric``, ``isc_features_to_metric``, ``prc_features_to_metric``), called on float64 features
that this package extracts itself; torch-fidelity's own feature extraction and downloads are never used, so the
maths runs offline with any extractor.  This module adds input checks (each bad input is one ``UserError``), float64
throughout, and small-N defaults:

* FID: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` with the trace of the square root taken as the sum
  of the square roots of the eigenvalues of S1 S2 (complex, real part kept), which is torch-fidelity's eigen-based
  method: it needs no ``sqrtm`` iteration and no epsilon fix-up for singular covariances (N < dim).
* KID: the unbiased MMD^2 estimator with the polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018),
  averaged over ``subsets`` random subsets of ``subset_size`` = min(1000, N1, N2) features of each set.
* IS: exp(E_x KL(p(y|x) || p(y))) over ``splits`` splits of softmaxed logits.
* precision/recall: k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019), k = 3.
"""
import numpy as np
import torch

from errors import UserError


def _library():
    try:
        from torch_fidelity import metric_fid, metric_isc, metric_kid, metric_prc
    except ImportError as e:
        raise UserError(f"the metrics need torch-fidelity: pip install torch-fidelity ({e})") from e
    return metric_fid, metric_kid, metric_isc, metric_prc


_CHECK_ROWS = 4096          # rows checked for finiteness at a time: a bounded temporary, whatever N


def _features(x, what, min_n=1):
    """``x`` as a finite float64 array (N, d), N >= min_n: ``x`` itself when it already is one (no copy, so that
    memory does not grow with N beyond the features themselves)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"{what} must be a 2-d array (N, dim); got shape {x.shape}")
    if x.shape[0] < min_n:
        raise UserError(f"{what}: need at least {min_n} rows, got N = {x.shape[0]}")
    x = np.asarray(x, dtype=np.float64)
    for start in range(0, len(x), _CHECK_ROWS):
        if not np.isfinite(x[start:start + _CHECK_ROWS]).all():
            raise UserError(f"{what} contain non-finite values")
    return x


def feature_statistics(features, overwrite=False):
    """Mean (d,) and covariance (d, d) of ``features`` (N, d), float64; the covariance is unbiased (N - 1), as in
    every FID implementation; N >= 2.  ``overwrite``: the features may be used as scratch space (they are centred in
    place when they are a float64 array), which saves numpy's copy of all N rows; the numbers are the same, bit for
    bit, as ``np.cov``'s (the same steps on the same memory layout)."""
    f = _features(features, "features", min_n=2)
    mu = f.mean(axis=0)
    if not overwrite or f is not features or not f.flags.writeable:
        return mu, np.cov(f, rowvar=False)
    x = f.T                                     # np.cov(f, rowvar=False)'s steps, without its copy of f
    x -= x.mean(axis=1)[:, None]
    c = np.dot(x, x.T.conj())
    c *= np.true_divide(1, x.shape[1] - 1)
    return mu, c


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID when they are Inception statistics)."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UserError(f"statistics do not match: mu {mu1.shape} and {mu2.shape}, sigma {sigma1.shape} and "
                        f"{sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise UserError(f"statistics contain non-finite values ({name})")
    metric_fid = _library()[0]
    out = metric_fid.fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                              verbose=False)
    return out[metric_fid.KEY_METRIC_FID]


def kernel_inception_distance(features1, features2, subsets=100, subset_size=1000, degree=3, gamma=None, coef0=1,
                              seed=2020):
    """KID (mean, std over subsets) between two feature sets; ``subset_size`` is cut to min(N1, N2); N >= 2 each.
    ``gamma`` None means 1 / dim.  Defaults are torch-fidelity's."""
    f1 = _features(features1, "features1", min_n=2)
    f2 = _features(features2, "features2", min_n=2)
    if f1.shape[1] != f2.shape[1]:
        raise UserError(f"feature sets have different lengths: {f1.shape[1]} and {f2.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise UserError(f"KID needs subsets >= 1 and subset_size >= 2 (got {subsets}, {subset_size})")
    metric_kid = _library()[1]
    out = metric_kid.kid_features_to_metric(
        torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=subsets,
        kid_subset_size=min(subset_size, len(f1), len(f2)), kid_kernel="poly", kid_kernel_poly_degree=degree,
        kid_kernel_poly_gamma=gamma, kid_kernel_poly_coef0=coef0, rng_seed=seed, verbose=False)
    return out[metric_kid.KEY_METRIC_KID_MEAN], out[metric_kid.KEY_METRIC_KID_STD]


def inception_score(logits, splits=10, seed=2020):
    """Inception Score (mean, std over ``splits``) of classifier logits (N, classes); N >= splits."""
    x = _features(logits, "logits", min_n=1)
    if splits < 1 or len(x) < splits:
        raise UserError(f"the Inception Score needs at least `splits` = {splits} samples, got N = {len(x)}")
    metric_isc = _library()[2]
    out = metric_isc.isc_features_to_metric(torch.from_numpy(x), splits=splits, shuffle=True, rng_seed=seed)
    return out[metric_isc.KEY_METRIC_ISC_MEAN], out[metric_isc.KEY_METRIC_ISC_STD]


def precision_recall(generated, real, k=3):
    """Improved precision and recall of ``generated`` features with respect to ``real`` ones, k-NN radius k;
    both sets need more than k rows.  Returns (precision, recall)."""
    g = _features(generated, "generated features", min_n=k + 1)
    r = _features(real, "real features", min_n=k + 1)
    if g.shape[1] != r.shape[1]:
        raise UserError(f"feature sets have different lengths: {g.shape[1]} and {r.shape[1]}")
    metric_prc = _library()[3]
    out = metric_prc.prc_features_to_metric(torch.from_numpy(g), torch.from_numpy(r), prc_neighborhood=k,
                                            prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return out[metric_prc.KEY_METRIC_PRECISION], out[metric_prc.KEY_METRIC_RECALL]
