"""Exact L2 nearest neighbours, the paper's memorisation check: for each sample, the closest training images.

``nearest_neighbours(queries, candidates, k)`` works on images (uint8, any layout; flattened and mapped to [0, 1])
or on feature arrays (float, (N, dim)), and reads the candidates in chunks of ``batch`` rows, so the full
(Q, N) distance matrix is never held in memory: N = 60,000 CIFAR-sized candidates cost
O(Q * batch + batch * D) memory.  Within a chunk the k best candidates are picked with the expansion
``|q|^2 + |c|^2 - 2 q.c`` in float64, and their distances are then recomputed directly as ``sqrt(sum((q - c)^2))``
(float64), so an image that is among the candidates is found at distance exactly 0 and the result does not depend
on the chunk size (up to near-ties below float64 rounding).  Ties are broken by the lower candidate index.
"""
import numpy as np
import torch

from errors import UserError


def _as_rows(x, what):
    """(N, ...) uint8 -> float64 in [0, 1], anything numeric -> float64; flattened to (N, D) torch on the CPU."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach().cpu()
    if t.dim() < 2:
        raise UserError(f"{what} must have shape (N, ...), got {tuple(t.shape)}")
    t = t.reshape(len(t), -1)
    return t.double() / 255 if t.dtype == torch.uint8 else t.double()


def nearest_neighbours(queries, candidates, k=5, batch=4096, exclude=None):
    """The ``k`` L2-nearest ``candidates`` of each query: ``(indices (Q, k) int64, distances (Q, k) float64)``,
    nearest first.

    ``queries`` (Q, ...) and ``candidates`` (N, ...): numpy arrays or tensors of the same per-row shape; uint8 is
    read as pixels and mapped to [0, 1] (so distances are in [0, 1] pixel units, ``sqrt(D)`` at most), other dtypes
    are used as they are (features).  ``batch``: how many candidates are converted and compared at a time.
    ``exclude``: optional (Q,) candidate index per query that may not be returned for it (the query itself, when
    the queries are taken from the candidates).  Needs ``k`` candidates to choose from."""
    q = _as_rows(queries, "queries")
    n = len(candidates)
    if n == 0 or len(q) == 0:
        raise UserError(f"nearest neighbours need queries and candidates, got {len(q)} and {n}")
    if int(k) < 1 or k > n - (exclude is not None):
        raise UserError(f"k must be between 1 and the number of candidates, got k = {k} for {n}")
    if batch < 1:
        raise UserError(f"batch must be positive, got {batch}")
    ex = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.int64).reshape(-1)
    if ex is not None and len(ex) != len(q):
        raise UserError(f"exclude needs one index per query ({len(q)}), got {len(ex)}")
    q_sq = (q * q).sum(1, keepdim=True)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    best_d = np.zeros((len(q), 0), dtype=np.float64)
    rows = torch.arange(len(q))
    for start in range(0, n, batch):
        c = _as_rows(candidates[start:start + batch], "candidates")
        if c.shape[1] != q.shape[1]:
            raise UserError(f"queries have {q.shape[1]} values per row, candidates {c.shape[1]}")
        d2 = q_sq + (c * c).sum(1)[None] - 2 * q @ c.T                          # (Q, chunk), approximate
        if ex is not None:
            inside = (ex >= start) & (ex < start + len(c))
            d2[rows[inside], ex[inside] - start] = float("inf")
        kk = min(k, len(c))
        local = torch.topk(d2, kk, dim=1, largest=False, sorted=False).indices      # (Q, kk)
        exact = (q[:, None, :] - c[local]).pow(2).sum(2).sqrt()                   # (Q, kk), exact
        if ex is not None:
            exact[(local + start) == ex[:, None]] = float("inf")
        idx = np.concatenate([best_i, (local + start).numpy()], 1)
        dist = np.concatenate([best_d, exact.numpy()], 1)
        order = np.lexsort((idx, dist), axis=1)[:, :k]                            # by distance, then index
        best_i, best_d = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
    return best_i, best_d


def median_nearest_distance(images, n_queries=200, batch=4096, seed=0):
    """The median distance from a reference image to its nearest *other* reference image, over a fixed seeded
    subset of ``n_queries`` of them searched against all: how close training images sit to each other, the scale
    against which a sample's nearest-neighbour distance says "memorised" (much smaller) or not."""
    n = len(images)
    if n < 2:
        raise UserError(f"the median nearest-neighbour distance needs at least 2 images, got {n}")
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n_queries, n), replace=False))
    _, dist = nearest_neighbours(images[pick], images, k=1, batch=batch, exclude=pick)
    return float(np.median(dist[:, 0]))


N_NEIGHBOUR_QUERIES = 10        # the first samples shown with their nearest training images
N_NEIGHBOURS = 5


def reference_pixels(reference, like):
    """All reference images (a data set) as one uint8 array laid out like the samples ``like`` (N, H, W, C)."""
    from evaluation.reference import item_to_uint8
    images = np.stack([item_to_uint8(reference[i]) for i in range(len(reference))])
    if images.ndim == 3:
        images = images[..., None]
    h, w, c = like.shape[1:]
    if images.shape[1:] == (c, h, w) and images.shape[1:] != (h, w, c):
        images = images.transpose(0, 2, 3, 1)
    if images.shape[1:] != (h, w, c):
        raise UserError(f"reference images have shape {images.shape[1:]}, samples {(h, w, c)}")
    return np.ascontiguousarray(images)


def neighbour_report(samples, reference, extractor, statistics, source):
    """For the first ``N_NEIGHBOUR_QUERIES`` samples (uint8 (N, H, W, C)), their ``N_NEIGHBOURS`` L2-nearest
    reference images (1) in pixel space ([0, 1] pixels, flattened), searched over the whole reference set, and (2)
    in the extractor's feature space, searched over the reference images whose features the statistics cache
    ``statistics`` holds (all of them, or its fixed subset of ``max_features``: features already computed for KID,
    so the search costs no extra pass of the network over the data).  Indices are into the reference set.  For
    scale, each space also gets the median distance between a reference image and its nearest other reference
    image (over a fixed subset of 200 of them); samples much closer to their neighbours than that suggest
    memorisation.  Returns (the report for neighbours.json, the queries, the reference pixels, the pixel and
    feature neighbour indices and distances for the figure)."""
    from evaluation.reference import feature_rows
    queries = samples[:min(N_NEIGHBOUR_QUERIES, len(samples))]
    pixels = reference_pixels(reference, samples)
    k = min(N_NEIGHBOURS, len(pixels))
    pix_i, pix_d = nearest_neighbours(queries, pixels, k=k)
    rows = feature_rows(len(pixels), statistics["meta"]["max_features"])
    feats = statistics["features"]
    if len(rows) != len(feats):
        raise RuntimeError(f"cached features have {len(feats)} rows, expected {len(rows)}")
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
    return report, queries, pixels, (pix_i, pix_d), (feat_i, feat_d)
