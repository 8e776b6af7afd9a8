"""The NCSN score network (Song & Ermon 2019, Sec. 4.1 and Appendix A.1) and its single-noise baseline.

``CondRefineNetDilated`` is s_theta(x, sigma_i): a 4-cascade RefineNet with dilated convolutions and conditional
instance normalisation++ (one set of norm parameters per noise level, indexed by the labels y).
``RefineNetDilated`` is the same network with unconditional InstanceNorm++ (used with one fixed sigma).

Layout for F = ngf and an H x W input (spatial sizes for 28x28 / 32x32 in brackets)::

    begin_conv  C -> F                                   [28 / 32]
    res1        2 x ResidualBlock(F -> F)                [28 / 32]   layer1
    res2        ResidualBlock(F -> 2F, down) + (2F -> 2F)  [14 / 16]   layer2
    res3        2 x ResidualBlock(2F, dilation 2)        [14 / 16]   layer3 (the 'down' block only adds a shortcut)
    res4        2 x ResidualBlock(2F, dilation 4)        [14 / 16]   layer4
    refine1..4  RefineBlocks back up to layer1's size; normalizer -> act -> end_conv  F -> C

The only downsampling is the mean pool in res2, so H and W must be even.  Module names and registration order follow
the official code, so official checkpoints load once the DataParallel ``module.`` prefix is stripped.
"""
from functools import partial

import torch
from torch import nn

from errors import ArgumentError
from models.layers import ELU, RefineBlock, ResidualBlock, apply_norm
from models.normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus


def _check_args(channels, image_size, ngf):
    if not isinstance(channels, int) or channels < 1:
        raise ArgumentError("channels", f"must be a positive int, got {channels!r}")
    if not isinstance(ngf, int) or ngf < 2:
        raise ArgumentError("ngf", f"must be an int >= 2 (InstanceNorm++ takes a variance over channels), "
                                   f"got {ngf!r}")
    if not isinstance(image_size, int) or image_size < 2 or image_size % 2:
        raise ArgumentError("image_size", f"must be a positive even int: the mean-pool downsampling in res2 "
                                          f"halves H and W, got {image_size!r}")


class _RefineNetDilated(nn.Module):
    """Shared body of both nets; ``norm(num_features)`` builds every normaliser.  Forward with ``y=None`` for the
    unconditional net."""

    def __init__(self, channels, image_size, ngf, norm, logit_transform):
        super().__init__()
        _check_args(channels, image_size, ngf)
        self.channels = channels
        self.image_size = image_size
        self.ngf = ngf
        self.logit_transform = logit_transform
        self.act = act = ELU()  # one instance shared by every block

        self.begin_conv = nn.Conv2d(channels, ngf, kernel_size=3, stride=1, padding=1)
        self.normalizer = norm(ngf)
        self.end_conv = nn.Conv2d(ngf, channels, kernel_size=3, stride=1, padding=1)

        block = partial(ResidualBlock, norm=norm, act=act)
        self.res1 = nn.ModuleList([block(ngf, ngf), block(ngf, ngf)])
        self.res2 = nn.ModuleList([block(ngf, 2 * ngf, resample="down"), block(2 * ngf, 2 * ngf)])
        self.res3 = nn.ModuleList([block(2 * ngf, 2 * ngf, resample="down", dilation=2),
                                   block(2 * ngf, 2 * ngf, dilation=2)])
        # The official code passes adjust_padding=(image_size == 28) to res4[0]; the dilated branch ignores it.
        self.res4 = nn.ModuleList([block(2 * ngf, 2 * ngf, resample="down", dilation=4),
                                   block(2 * ngf, 2 * ngf, dilation=4)])

        refine = partial(RefineBlock, norm=norm, act=act)
        self.refine1 = refine([2 * ngf], 2 * ngf, start=True)
        self.refine2 = refine([2 * ngf, 2 * ngf], 2 * ngf)
        self.refine3 = refine([2 * ngf, 2 * ngf], ngf)
        self.refine4 = refine([ngf, ngf], ngf, end=True)

    @staticmethod
    def _run(blocks, x, y):
        for block in blocks:
            x = block(x, y)
        return x

    def _score(self, x, y):
        """x (B, C, H, W) with even H, W; y (B,) labels or None.  Returns (B, C, H, W)."""
        if not self.logit_transform:
            x = 2 * x - 1.  # data in [0, 1] -> [-1, 1]
        h = self.begin_conv(x)                                  # (B, F, H, W)
        layer1 = self._run(self.res1, h, y)                     # (B, F, H, W)
        layer2 = self._run(self.res2, layer1, y)                # (B, 2F, H/2, W/2)
        layer3 = self._run(self.res3, layer2, y)                # (B, 2F, H/2, W/2)
        layer4 = self._run(self.res4, layer3, y)                # (B, 2F, H/2, W/2)

        ref1 = self.refine1([layer4], y, layer4.shape[2:])      # (B, 2F, H/2, W/2)
        ref2 = self.refine2([layer3, ref1], y, layer3.shape[2:])  # (B, 2F, H/2, W/2)
        ref3 = self.refine3([layer2, ref2], y, layer2.shape[2:])  # (B, F, H/2, W/2)
        h = self.refine4([layer1, ref3], y, layer1.shape[2:])   # (B, F, H, W)

        h = self.act(apply_norm(self.normalizer, h, y))
        return self.end_conv(h)                                 # (B, C, H, W)


class CondRefineNetDilated(_RefineNetDilated):
    """NCSN s_theta(x, y): ``forward(x, y)`` with x (B, C, H, W) in [0, 1] (or logits if ``logit_transform``) and
    y (B,) long indices of the noise levels; returns the score estimate, shaped like x.

    ``image_size`` is only validated (even, so that the mean-pool downsampling works); forward accepts any even H, W.

    ``sigmas`` (L,) given: the output is divided by ``sigmas[y]`` (NCSNv2's Technique 3, s(x, sigma) = net(x) / sigma;
    ``model.scale_by_sigma``).  They are a non-persistent buffer, so the state-dict keys stay the official ones.
    """

    def __init__(self, channels, image_size, ngf, num_classes=10, logit_transform=False, sigmas=None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ArgumentError("num_classes", f"must be a positive int, got {num_classes!r}")
        norm = partial(ConditionalInstanceNorm2dPlus, num_classes=num_classes, bias=True)
        super().__init__(channels, image_size, ngf, norm, logit_transform)
        self.num_classes = num_classes
        self.scale_by_sigma = sigmas is not None
        if sigmas is not None:
            sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
            if sigmas.shape != (num_classes,):
                raise ValueError(f"sigmas must have shape ({num_classes},) (one per noise level), got "
                                 f"{tuple(sigmas.shape)}")
            self.register_buffer("sigmas", sigmas, persistent=False)

    def forward(self, x, y):
        h = self._score(x, y)
        if self.scale_by_sigma:
            h = h / self.sigmas[y].view(-1, *([1] * (h.ndim - 1))).to(h.dtype)
        return h


class RefineNetDilated(_RefineNetDilated):
    """Single-noise baseline s_theta(x): ``forward(x)``, same network with unconditional InstanceNorm++.

    ``num_classes`` is accepted and ignored, like the official baseline.
    """

    def __init__(self, channels, image_size, ngf, num_classes=10, logit_transform=False):
        norm = partial(InstanceNorm2dPlus, bias=True)
        super().__init__(channels, image_size, ngf, norm, logit_transform)

    def forward(self, x):
        return self._score(x, None)
