"""Data: image data sets and their transforms, resumable batch streams, and the 2-D toy distributions.

What lives here: ``images.py`` (``get_dataset``: loaders and per-data-set layouts), ``transforms.py`` (dequantisation,
logit and the inverse), ``streams.py`` (``BatchStream``, ``FreshSamples``), ``toy.py`` (mixtures with exact perturbed
densities and scores).  What may not: models, losses, metrics (evaluation/) or anything about runs and checkpoints.
"""
from datasets.images import check_shape, data_root, get_dataset
from datasets.streams import BatchStream, FreshSamples
from datasets.transforms import data_transform, inverse_data_transform, logit_transform

__all__ = ["get_dataset", "data_root", "check_shape", "BatchStream", "FreshSamples", "data_transform", "inverse_data_transform",
           "logit_transform"]
