"""Feature extractors: uint8 images in, float64 feature vectors out.

A *feature extractor* is any object with ``name`` (a string that identifies the network and its preprocessing; it
keys cached reference statistics), ``dim`` (the feature length) and ``__call__(images) -> ndarray (N, dim)
float64``, where ``images`` is a uint8 array or tensor laid out (N, H, W, C), (N, C, H, W) or (N, H, W), C in {1, 3};
the returned array is the caller's (``image_scores`` centres it in place once it has no other use for it).
An extractor that also has ``logits(images)`` can feed the Inception Score.

``evaluation.inception.inception_features()`` returns the standard FID network (TensorFlow's Inception v3 of
2015-12-05, 2048-d pool3 features; its weights are found and checked there) with the standard FID preprocessing, done
here and identical whatever file the weights come from:

1. layout: (N, H, W, C) when the last axis is 1 or 3, else (N, C, H, W) when axis 1 is; (N, H, W) is grayscale;
2. grayscale is replicated to 3 channels (R = G = B);
3. the uint8 values become float32 in [0, 255] and are resized to 299 x 299 with TensorFlow 1's ``ResizeBilinear``
   (``align_corners=False``, no half-pixel centres: output pixel j samples input coordinate j * in / out,
   neighbours clamped at the border), as the Inception graph of the original TTUR FID code does; images already
   299 x 299 are not resampled;
4. values are mapped to (x - 128) / 128, i.e. [-1, 0.9921875];
5. the network's 8 x 8 average pool gives 2048 float32 features per image, returned as float64.

Features are computed batch by batch: the uint8 images are converted, resized and normalised one batch at a time and
written into the (N, dim) float64 result, so memory beyond the result does not grow with N.
"""
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from errors import UserError


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need of a network: a cache key, a feature length, and images -> (N, dim) float64."""
    name: str
    dim: int

    def __call__(self, images) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------ preprocessing

def images_to_nchw(images):
    """Check ``images`` (uint8 array/tensor (N, H, W, C), (N, C, H, W) or (N, H, W), C in {1, 3}, N > 0) and return
    a uint8 CPU tensor (N, 3, H, W), grayscale replicated to 3 channels.  Anything else is a UserError."""
    return nchw_view(images).contiguous()


def nchw_view(images):
    """:func:`images_to_nchw` without the copy: a (N, 3, H, W) view of the images (permuted, grayscale expanded), to
    be made contiguous a batch at a time."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise UserError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise UserError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
        x = images.detach().cpu()
    else:
        raise UserError(f"images must be a uint8 numpy array or torch tensor, got {type(images).__name__}")
    if x.dim() not in (3, 4):
        raise UserError(f"images must be (N, H, W, C), (N, C, H, W) or (N, H, W); got shape {tuple(x.shape)}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):  # channels last (the .npz convention) wins when both axes could be channels
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3):
        raise UserError(f"images must have 1 or 3 channels (last axis, or axis 1); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise UserError("no images (N = 0)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise UserError(f"images have an empty spatial size: shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _tf1_axis(n_in, n_out, device):
    """Source indices and weights of TF1 legacy bilinear resizing along one axis: x_out[j] samples j * n_in / n_out,
    computed in float32 as TensorFlow does."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.float()
    return lo.to(device), hi.to(device), frac.to(device)


def tf1_bilinear_resize(x, size):
    """Resize a float tensor (N, C, H, W) to ``size`` = (h, w) like TensorFlow 1's ``tf.image.resize_bilinear``
    with ``align_corners=False`` (the legacy mode without half-pixel centres): x_out[j] = a + (b - a) * t with a, b
    the input pixels at floor(j * in / out) and the next one (clamped), separably, rows then columns."""
    h, w = size
    lo, hi, t = _tf1_axis(x.shape[2], h, x.device)
    a = x[:, :, lo, :]
    x = a + (x[:, :, hi, :] - a) * t.to(x.dtype).view(1, 1, h, 1)
    lo, hi, t = _tf1_axis(x.shape[3], w, x.device)
    a = x[:, :, :, lo]
    return a + (x[:, :, :, hi] - a) * t.to(x.dtype).view(1, 1, 1, w)
