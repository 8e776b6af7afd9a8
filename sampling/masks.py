"""Inpainting masks, pure functions: ``inpainting_mask(kind, shape)`` -> a float (C, H, W) tensor, 1 = observed.

Kinds (``MASK_KINDS``; ``sampling.inpainting_mask`` in the config):

- ``left_half`` (the official mask): the columns ``< W // 2`` are observed, the right half is completed;
- ``top_half``: the rows ``< H // 2`` are observed, the bottom half is completed;
- ``centre_box``: a centred box of about ``fraction`` of the area is hidden (sides ``round(H * sqrt(fraction))`` by
  ``round(W * sqrt(fraction))``, at least one pixel, at most the image), the rest is observed;
- ``random_pixels``: each pixel (the same for every channel) is observed with probability ``1 - fraction``, drawn
  from a local ``torch.Generator`` seeded by ``seed`` (the global random state is not touched).

``fraction`` is the hidden share for ``centre_box`` and ``random_pixels``; the two halves ignore it.  Nothing here
reads configs, files or devices; the mask is on the CPU (move it with ``.to``).
"""
import math

import torch

MASK_KINDS = ("left_half", "top_half", "centre_box", "random_pixels")


def inpainting_mask(kind, shape, fraction=0.5, seed=0):
    """The mask of ``kind`` for images of ``shape = (C, H, W)``: a float32 (C, H, W) tensor of 0/1, 1 = observed.

    ``fraction`` (0 < fraction < 1): the share of pixels hidden by ``centre_box`` (approximately, whole pixels) and,
    in expectation, by ``random_pixels``; ``seed`` seeds ``random_pixels``.  Raises ValueError for an unknown kind, a
    shape that is not three positive sizes or a fraction outside (0, 1).
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown inpainting mask {kind!r}; one of {', '.join(MASK_KINDS)}")
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    c, h, w = (int(s) for s in shape)
    plane = torch.zeros(h, w)
    if kind == "left_half":
        plane[:, : w // 2] = 1
    elif kind == "top_half":
        plane[: h // 2, :] = 1
    elif kind == "centre_box":
        side = math.sqrt(fraction)
        bh, bw = (min(n, max(1, round(n * side))) for n in (h, w))
        top, left = (h - bh) // 2, (w - bw) // 2
        plane.fill_(1)
        plane[top: top + bh, left: left + bw] = 0
    else:                                                   # random_pixels
        g = torch.Generator().manual_seed(int(seed))
        plane = (torch.rand(h, w, generator=g) >= fraction).float()
    return plane.unsqueeze(0).expand(c, h, w).contiguous()
