"""Nearest neighbours (evaluation/neighbours.py): exact against brute force, independent of the chunk size, a
training image found at distance 0; and --eval on a tiny run writes neighbours.json and neighbours.png."""
import json

import numpy as np
import pytest
import torch
from test_eval_cli import evaluate

from errors import UserError
from evaluation.neighbours import median_nearest_distance, nearest_neighbours

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: the tiny trained run with the stand-in Inception

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def brute_force(queries, candidates, k):
    d = torch.cdist(torch.as_tensor(queries, dtype=torch.float64), torch.as_tensor(candidates, dtype=torch.float64))
    dist, idx = torch.topk(d, k, dim=1, largest=False)
    return idx.numpy(), dist.numpy()


def test_agrees_with_cdist_on_features_and_pixels():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 33)), rng.normal(size=(301, 33))            # continuous: no ties
    idx, dist = nearest_neighbours(q, c, k=5, batch=64)
    ref_i, ref_d = brute_force(q, c, 5)
    assert idx.shape == dist.shape == (7, 5) and idx.dtype == np.int64 and dist.dtype == np.float64
    assert np.array_equal(idx, ref_i) and np.allclose(dist, ref_d, rtol=1e-12, atol=1e-12)

    qp, cp = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    idx, dist = nearest_neighbours(qp, cp, k=3, batch=17)
    ref_i, ref_d = brute_force(qp.reshape(6, -1) / 255, cp.reshape(200, -1) / 255, 3)
    assert np.array_equal(idx, ref_i) and np.allclose(dist, ref_d, rtol=1e-12, atol=1e-12)


def test_chunk_size_does_not_change_the_answer():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(5, 10)), rng.normal(size=(103, 10))
    results = [nearest_neighbours(q, torch.from_numpy(c), k=4, batch=b) for b in (1, 3, 50, 103, 4096)]
    for idx, dist in results[1:]:
        assert np.array_equal(idx, results[0][0]) and np.array_equal(dist, results[0][1])


def test_a_training_image_is_its_own_nearest_neighbour_at_distance_zero():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (500, 8, 8, 1), dtype=np.uint8)
    idx, dist = nearest_neighbours(train[[42, 7, 499]], train, k=5, batch=64)
    assert idx[:, 0].tolist() == [42, 7, 499] and np.all(dist[:, 0] == 0) and np.all(dist[:, 1] > 0)
    # excluded, it is not found; the median distance to the nearest *other* image is positive
    idx, dist = nearest_neighbours(train[[42]], train, k=1, exclude=[42])
    assert idx[0, 0] != 42 and dist[0, 0] > 0
    assert median_nearest_distance(train, n_queries=50) > 0
    with pytest.raises(UserError, match="k must be"):
        nearest_neighbours(train[:2], train[:3], k=4)


def test_eval_writes_neighbours_json_and_figure(tiny_run, tmp_path):
    out = tmp_path / "ev"
    assert evaluate(tiny_run, out) == 0
    report = json.loads((out / "neighbours.json").read_text())
    assert report["n_queries"] == 10 and report["k"] == 5 and report["n_reference"] == 50
    for space in ("pixel", "feature"):
        idx, dist = np.array(report[space]["indices"]), np.array(report[space]["distances"])
        assert idx.shape == dist.shape == (10, 5) and idx.min() >= 0 and idx.max() < 50
        assert np.all(np.diff(dist, axis=1) >= 0) and report[space]["reference_median_nn_distance"] > 0
    samples = np.load(out / "samples.npz")["samples"]                           # (10, 8, 8, 1)
    assert (out / "neighbours.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert not any("neighbour" in key for key in metrics)                       # metrics.json unchanged
    # a sample with its pixel-space neighbour: the recorded distance is the [0, 1] pixel L2 distance to it
    assert report["pixel"]["distances"][0][0] <= np.sqrt(samples[0].size)
