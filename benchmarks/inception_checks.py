"""Sanity checks of the offline FID Inception network on real images; the numbers in docs/evaluation.md.

    python benchmarks/inception_checks.py --data DATA [--n 200] [--threads 1]

Reads MNIST (torchvision raw layout: DATA/MNIST/raw/) and the CIFAR-10 PNG folder DATA/cifar10_png/train/, extracts Inception features with
evaluation.inception_features() and prints: FID/KID of a set against itself, MNIST test vs other MNIST test images and
vs MNIST train images, FID as Gaussian pixel noise grows, CIFAR-10 train halves, and MNIST vs CIFAR-10.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import feature_statistics, frechet_distance, inception_features, kernel_inception_distance, load_images  # noqa: E402


def fid(f1, f2):
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--data", required=True,
                   help="folder holding MNIST/raw/ (torchvision layout) and cifar10_png/train/<class>/*.png")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sigmas", default="8,16,32,64")
    args = p.parse_args()
    if not (Path(args.data) / "MNIST" / "raw").is_dir():
        p.error(f"--data {args.data}: no MNIST/raw/ folder there; point --data at a folder holding MNIST/raw/ "
                f"(torchvision's layout) and cifar10_png/train/<class>/*.png")
    torch.set_num_threads(args.threads)
    import torchvision
    n = args.n
    t0 = time.time()
    ex = inception_features()
    print(f"extractor {ex.name} ({ex.source})", flush=True)
    test = torchvision.datasets.MNIST(args.data, train=False, download=False).data.numpy()
    train = torchvision.datasets.MNIST(args.data, train=True, download=False).data.numpy()
    a, b, c = test[:n], test[n:2 * n], train[:n]
    fa, fb, fc = ex(a), ex(b), ex(c)
    print(f"N = {n}; features in {time.time() - t0:.0f} s", flush=True)
    print(f"FID(MNIST test A, A)        = {fid(fa, fa):.6f}")
    print(f"FID(MNIST test A, test B)   = {fid(fa, fb):.3f}   KID = {kernel_inception_distance(fa, fb)[0]:.5f}")
    print(f"FID(MNIST test A, train C)  = {fid(fa, fc):.3f}   KID = {kernel_inception_distance(fa, fc)[0]:.5f}",
          flush=True)
    rng = np.random.default_rng(0)
    for s in [float(v) for v in args.sigmas.split(",")]:
        noisy = np.clip(a.astype(np.float64) + rng.normal(0, s, a.shape), 0, 255).round().astype(np.uint8)
        fn = ex(noisy)
        print(f"FID(MNIST test A, A + N(0, {s:g}^2) pixel noise) = {fid(fa, fn):.3f}   "
              f"KID = {kernel_inception_distance(fa, fn)[0]:.5f}", flush=True)
    cifar = load_images(Path(args.data) / "cifar10_png" / "train")
    half = len(cifar) // 2
    f1, f2 = ex(cifar[0::2]), ex(cifar[1::2])  # sorted paths group the classes: interleave the halves
    print(f"FID(CIFAR-10 train PNGs, even vs odd files, {half} each) = {fid(f1, f2):.3f}   "
          f"KID = {kernel_inception_distance(f1, f2)[0]:.5f}")
    print(f"FID(MNIST test A[:{half}], CIFAR-10 even files) = {fid(fa[:half], f1):.3f}   "
          f"KID = {kernel_inception_distance(fa[:half], f1)[0]:.5f}")
    print(f"total {time.time() - t0:.0f} s with {args.threads} thread(s)")


if __name__ == "__main__":
    main()
