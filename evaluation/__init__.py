"""Evaluation: numbers about samples and models.  Offline image-quality metrics (FID, KID, IS, precision/recall) and
the 2-D toy metrics (mode weights, MMD, Fisher divergences: ``toy_metrics.py``).

What lives here: turning images (an ``.npz`` of uint8 samples, a folder of PNGs, an array or a data set) into
Inception features (``features.py``), the metric maths on those features (``metrics.py``, a thin layer over
torch-fidelity's feature-level functions), sample loading (``samples.py``) and reference statistics of a data set
split cached once beside the data (``reference.py``); the held-out score matching loss of a checkpoint on fixed noise
(``held_out.py``), nearest training images (``neighbours.py``), bits/dim (``likelihood.py``), inpainting errors
(``inpainting.py``) and sample export (``export.py``).  Everything here is a plain function of its arguments: it is
pure of runners and of the command line, so a runner or ``main.py --eval`` can call it and tests can drive it alone.

What may not live here: training or sampling code, config parsing, command-line parsing, printing of results.
Errors a user can cause (a missing weights file, a sample file of the wrong shape, N = 0, ...) are
``errors.UserError`` with one line; nothing is written half-way (cache files are written to a temporary name and
renamed).
"""
from evaluation.features import FeatureExtractor, images_to_nchw, tf1_bilinear_resize
from evaluation.inception import InceptionExtractor, inception_features
from evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from evaluation.reference import reference_statistics, stats_cache_path
from evaluation.samples import load_images

__all__ = [
    "FeatureExtractor", "InceptionExtractor", "images_to_nchw", "inception_features", "tf1_bilinear_resize",
    "feature_statistics", "frechet_distance", "inception_score", "kernel_inception_distance", "precision_recall",
    "reference_statistics", "stats_cache_path", "load_images",
]
