"""ResScore: the residual conv/deconv score network of the ScoreNetRunner (Figure 1 of Song & Ermon 2019).

Encoder ``convs``: Conv2d(C, nef) -> ConvResBlock(nef) -> ConvResBlock(nef -> 2nef, /2) -> ConvResBlock(2nef)
-> ConvResBlock(2nef -> 4nef, /2) -> ConvResBlock(4nef).  Decoder ``deconvs``: DeconvResBlock(4ndf)
-> DeconvResBlock(4ndf -> 2ndf, x2) -> DeconvResBlock(2ndf) -> DeconvResBlock(2ndf -> ndf, x2) -> DeconvResBlock(ndf)
-> Conv2d(ndf, C).  ELU activations, GroupNorm(8, .) after every convolution of a block's main path.

Module names (``convs``/``deconvs``, ``main``/``residual``/``final_act``) follow the official ``models/scorenet.py``;
unlike the official code (which hard-codes 3), the number of image channels ``channels`` is configurable.

Requirements: ``nef == ndf`` (the encoder output feeds the decoder), both divisible by 8 (GroupNorm with 8 groups),
and H, W divisible by 4 (two stride-2 downsamplings undone by two x2 transposed convolutions): 32 -> 16 -> 8 -> 16 -> 32.
"""
from torch import nn

from errors import ArgumentError

GROUPS = 8


class _ResBlock(nn.Module):
    """act(main(x) + residual(x)); subclasses build ``main``, ``residual`` (only when ``resize``) and ``final_act``."""

    def forward(self, x):
        h = self.main(x)                                   # (B, out, H', W'), a fresh GroupNorm output
        h += self.residual(x) if self.resize else x
        return self.final_act(h)


class ConvResBlock(_ResBlock):
    """act(main(x) + residual(x)); main = conv3x3 (stride 2 if resize) -> GN -> act -> conv3x3 -> GN.
    The residual is the identity, or a stride-2 conv3x3 when ``resize``."""

    def __init__(self, in_channel, out_channel, resize=False):
        super().__init__()
        if not resize and in_channel != out_channel:
            raise ValueError("a ConvResBlock without resize keeps the channel count")
        self.resize = resize
        stride = 2 if resize else 1
        self.main = nn.Sequential(
            nn.Conv2d(in_channel, out_channel, 3, stride=stride, padding=1),
            nn.GroupNorm(GROUPS, out_channel),
            nn.ELU(),
            nn.Conv2d(out_channel, out_channel, 3, stride=1, padding=1),
            nn.GroupNorm(GROUPS, out_channel),
        )
        if resize:
            self.residual = nn.Conv2d(in_channel, out_channel, 3, stride=2, padding=1)
        self.final_act = nn.ELU()


class DeconvResBlock(_ResBlock):
    """act(main(x) + residual(x)) with transposed convolutions; when ``resize`` the second convT of main and the
    residual convT have stride 2 and output_padding 1 (H, W doubled)."""

    def __init__(self, in_channel, out_channel, resize=False):
        super().__init__()
        if not resize and in_channel != out_channel:
            raise ValueError("a DeconvResBlock without resize keeps the channel count")
        self.resize = resize
        up = dict(stride=2, padding=1, output_padding=1) if resize else dict(stride=1, padding=1)
        self.main = nn.Sequential(
            nn.ConvTranspose2d(in_channel, out_channel, 3, stride=1, padding=1),
            nn.GroupNorm(GROUPS, out_channel),
            nn.ELU(),
            nn.ConvTranspose2d(out_channel, out_channel, 3, **up),
            nn.GroupNorm(GROUPS, out_channel),
        )
        if resize:
            self.residual = nn.ConvTranspose2d(in_channel, out_channel, 3, stride=2, padding=1, output_padding=1)
        self.final_act = nn.ELU()


class ResScore(nn.Module):
    """Unconditional score network s_theta(x): ``forward(x)`` with x (B, channels, H, W), H and W divisible by 4;
    returns a tensor shaped like x.  Input in [0, 1] is mapped to [-1, 1] unless ``logit_transform``.
    ``image_size`` (optional, not stored) checks at construction that the network can take that size."""

    def __init__(self, channels=3, nef=32, ndf=32, logit_transform=False, image_size=None):
        super().__init__()
        if image_size is not None:
            _check_size(image_size, image_size)
        if nef != ndf:
            raise ArgumentError("nef", f"must equal ndf in ResScore (the encoder output feeds the decoder), "
                                       f"got {nef} and {ndf}")
        if nef < GROUPS or nef % GROUPS:
            raise ArgumentError("nef", f"must be a positive multiple of {GROUPS} (GroupNorm groups), got {nef}")
        if channels < 1:
            raise ArgumentError("channels", f"must be positive, got {channels}")
        self.channels = channels
        self.nef = nef
        self.ndf = ndf
        self.logit_transform = logit_transform
        self.convs = nn.Sequential(
            nn.Conv2d(channels, nef, 3, 1, 1),
            ConvResBlock(nef, nef),
            ConvResBlock(nef, 2 * nef, resize=True),
            ConvResBlock(2 * nef, 2 * nef),
            ConvResBlock(2 * nef, 4 * nef, resize=True),
            ConvResBlock(4 * nef, 4 * nef),
        )
        self.deconvs = nn.Sequential(
            DeconvResBlock(4 * ndf, 4 * ndf),
            DeconvResBlock(4 * ndf, 2 * ndf, resize=True),
            DeconvResBlock(2 * ndf, 2 * ndf),
            DeconvResBlock(2 * ndf, ndf, resize=True),
            DeconvResBlock(ndf, ndf),
            nn.Conv2d(ndf, channels, 3, 1, 1),
        )

    def forward(self, x):
        """x (B, C, H, W) -> (B, C, H, W); raises ValueError unless H and W are divisible by 4."""
        _check_size(*x.shape[-2:])
        if not self.logit_transform:
            x = 2 * x - 1.
        return self.deconvs(self.convs(x))                 # (B, 4nef, H/4, W/4) in the middle


def _check_size(h, w):
    if h % 4 or w % 4:
        raise ArgumentError("image_size", f"must be a multiple of 4 for ResScore (it halves H and W twice), "
                                          f"got {h}x{w}")
