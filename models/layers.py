"""Blocks shared by the conditional NCSN RefineNet and the unconditional baseline RefineNet.

Every block takes ``norm``, a factory ``norm(num_features) -> nn.Module``, and ``act``, an activation module shared by
the whole network.  The label convention is ``y=None``:

* conditional net (NCSN): ``norm = partial(ConditionalInstanceNorm2dPlus, num_classes=L)`` and forward passes the
  noise-level labels ``y`` (B,), so each normaliser is called as ``norm(x, y)``;
* unconditional baseline: ``norm = InstanceNorm2dPlus`` and forward passes ``y=None``, so it is called as ``norm(x)``.

Module attribute names, parameter shapes and registration order reproduce the official state dict (key names such as
``1_2_norm``, ``normalize1`` registered last, CRP pooling under ``maxpool``), so official checkpoints and optimizer
states load.  RefineNet blocks follow Lin et al. 2017 (RCU, MSF, CRP), with the NCSN changes of Appendix A.1.
``ELU`` and ``AvgPool5`` are the network's activation and CRP pool, each with a speed switch that changes rounding
only (``compute.fast_elu``, ``compute.pool_as_conv``).
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.normalization import statistics_dtype


class _ELUFromExp(torch.autograd.Function):
    """ELU(x) = relu(x) + exp(min(x, 0)) - 1, with ELU's own backward (from the result; differentiable again, for
    sliced score matching's double backward)."""

    @staticmethod
    def forward(ctx, x):
        negative = torch.clamp(x, max=0).to(statistics_dtype(x)).exp_().sub_(1)   # float32 for half x
        result = negative.to(x.dtype).add_(torch.relu(x))                         # one of the two is 0: exact
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, True, result)


class ELU(nn.Module):
    """ELU with alpha = 1 (``nn.ELU()``'s maths; no parameters, nothing in the state dict).  ``fast`` is a speed
    option (``compute.fast_elu``, set by compute/precision.py ``prepare_model``): the negative part from ``exp``
    instead of torch's ``expm1`` kernel, which on CPUs is many times slower than ``exp`` (docs/speed.md).  The two
    differ by floating-point rounding only (tests/test_speed.py); for half-precision x the exponential is taken in
    float32 and rounded once."""

    def __init__(self):
        super().__init__()
        self.fast = False

    def forward(self, x):
        return _ELUFromExp.apply(x) if self.fast else F.elu(x)


class AvgPool5(nn.Module):
    """The CRP pool: 5x5 average, stride 1, zero padding 2 counted in the average (``nn.AvgPool2d(5, 1, 2)``; no
    parameters, nothing in the state dict).  ``as_conv`` is a speed option (``compute.pool_as_conv``, set by
    compute/precision.py ``prepare_model``): the same sum of 25 neighbours as a depthwise convolution with a kernel
    of ones (exact in every dtype), divided by 25; on CPUs torch's average-pool kernels, and their backward, are many
    times slower than oneDNN's depthwise convolution (docs/speed.md).  The two differ by floating-point rounding
    only (tests/test_speed.py)."""

    def __init__(self):
        super().__init__()
        self.as_conv = False

    def forward(self, x):
        if not self.as_conv:
            return F.avg_pool2d(x, kernel_size=5, stride=1, padding=2)
        channels = x.shape[1]
        ones = torch.ones(channels, 1, 5, 5, dtype=x.dtype, device=x.device)
        return F.conv2d(x, ones, padding=2, groups=channels).div_(25)   # a fresh conv output: in place is safe


def apply_norm(norm, x, y):
    """``norm(x)`` for the unconditional net (``y is None``), ``norm(x, y)`` for the conditional one."""
    return norm(x) if y is None else norm(x, y)


def conv3x3(in_planes, out_planes, bias=True):
    """3x3 convolution, stride 1, 'same' padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=bias)


def dilated_conv3x3(in_planes, out_planes, dilation, bias=True):
    """3x3 convolution with the given dilation and 'same' padding (spatial size unchanged)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution ('same' padding, bias) followed by 2x2 mean pooling: (B, C, H, W) -> (B, out, H/2, W/2).

    The pooling is the average of the four stride-2 sub-grids, which needs even H and W.
    """

    def __init__(self, input_dim, output_dim, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(input_dim, output_dim, kernel_size, stride=1, padding=kernel_size // 2, bias=True)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"ConvMeanPool needs even spatial sizes, got {h}x{w}")
        return F.avg_pool2d(self.conv(x), kernel_size=2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: h = conv2(act(norm2(conv1(act(norm1(x)))))); returns shortcut(x) + h.

    ``resample='down'`` without dilation halves H, W (conv2 and the 1x1 shortcut are ConvMeanPools).  With a
    ``dilation`` the convolutions are dilated and nothing is downsampled; ``resample='down'`` then still forces a
    (dilated 3x3) shortcut convolution even when ``input_dim == output_dim``, as in the official code.
    """

    def __init__(self, input_dim, output_dim, norm, act, resample=None, dilation=None):
        super().__init__()
        if resample not in (None, "down"):
            raise ValueError(f"resample must be None or 'down', got {resample!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.resample = resample
        self.act = act
        if dilation is not None:
            conv = partial(dilated_conv3x3, dilation=dilation)
            mid = input_dim if resample == "down" else output_dim
            self.conv1 = conv(input_dim, mid)
            self.normalize2 = norm(mid)
            self.conv2 = conv(mid, output_dim)
            make_shortcut = conv
        elif resample == "down":
            self.conv1 = conv3x3(input_dim, input_dim)
            self.normalize2 = norm(input_dim)
            self.conv2 = ConvMeanPool(input_dim, output_dim, kernel_size=3)
            make_shortcut = partial(ConvMeanPool, kernel_size=1)
        else:
            self.conv1 = conv3x3(input_dim, output_dim)
            self.normalize2 = norm(output_dim)
            self.conv2 = conv3x3(output_dim, output_dim)
            make_shortcut = partial(nn.Conv2d, kernel_size=1)  # never needed by the two nets
        if output_dim != input_dim or resample is not None:
            self.shortcut = make_shortcut(input_dim, output_dim)
        self.normalize1 = norm(input_dim)  # registered last: official state-dict order

    def forward(self, x, y=None):
        h = self.conv1(self.act(apply_norm(self.normalize1, x, y)))
        h = self.conv2(self.act(apply_norm(self.normalize2, h, y)))
        shortcut = x if self.output_dim == self.input_dim and self.resample is None else self.shortcut(x)
        h += shortcut  # h is a fresh conv/pool output that autograd does not keep
        return h


class RCUBlock(nn.Module):
    """Residual conv unit: n_blocks x [res = x; n_stages x (norm -> act -> conv3x3 w/o bias); x += res].

    Attributes ``'{i}_{j}_norm'`` and ``'{i}_{j}_conv'`` (1-based), registered norm then conv per (i, j).
    """

    def __init__(self, features, n_blocks, n_stages, norm, act):
        super().__init__()
        self.n_blocks = n_blocks
        self.n_stages = n_stages
        self.act = act
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                setattr(self, f"{i}_{j}_norm", norm(features))
                setattr(self, f"{i}_{j}_conv", conv3x3(features, features, bias=False))

    def forward(self, x, y=None):
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                x = apply_norm(getattr(self, f"{i}_{j}_norm"), x, y)
                x = getattr(self, f"{i}_{j}_conv")(self.act(x))
            x += residual  # x is a fresh conv output here
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: x = act(x); path = x; n_stages x [path = conv(pool(norm(path))); x = x + path].

    The pool is a 5x5 stride-1 *average* pool (count_include_pad=True) stored as ``maxpool``, like the official
    code; ``convs`` is registered before ``norms``.
    """

    def __init__(self, features, n_stages, norm, act):
        super().__init__()
        self.n_stages = n_stages
        self.act = act
        self.convs = nn.ModuleList([conv3x3(features, features, bias=False) for _ in range(n_stages)])
        self.norms = nn.ModuleList([norm(features) for _ in range(n_stages)])
        self.maxpool = AvgPool5()

    def forward(self, x, y=None):
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(self.maxpool(apply_norm(norm, path, y)))
            x = x + path  # not in place: the first x is saved by norms[0] for backward
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: sum_i upsample(conv3x3_i(norm_i(x_i))) to ``shape`` (bilinear, align_corners=True)."""

    def __init__(self, in_planes, features, norm):
        super().__init__()
        self.features = features
        self.convs = nn.ModuleList([conv3x3(c, features, bias=True) for c in in_planes])
        self.norms = nn.ModuleList([norm(c) for c in in_planes])

    def forward(self, xs, y, shape):
        """xs: list of (B, C_i, H_i, W_i); shape: target (H, W).  Returns (B, features, H, W)."""
        shape = tuple(shape)
        sums = None
        for x, norm, conv in zip(xs, self.norms, self.convs):
            h = conv(apply_norm(norm, x, y))
            if tuple(h.shape[-2:]) != shape:  # same size: align_corners interpolation is the identity
                h = F.interpolate(h, size=shape, mode="bilinear", align_corners=True)
            if sums is None:
                sums = h
            else:
                sums += h  # sums is a fresh conv/interpolate output that autograd does not keep
        return sums


class RefineBlock(nn.Module):
    """RefineNet block: per-input RCU (2 blocks x 2 stages) -> MSF (if several inputs) -> CRP -> output RCU
    (``3 if end else 1`` blocks x 2 stages).  Registration: adapt_convs, output_convs, msf, crp."""

    def __init__(self, in_planes, features, norm, act, start=False, end=False):
        super().__init__()
        if start and len(in_planes) != 1:
            raise ValueError("a start RefineBlock takes exactly one input (it has no MSF)")
        self.n_blocks = len(in_planes)
        self.adapt_convs = nn.ModuleList([RCUBlock(c, 2, 2, norm, act) for c in in_planes])
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, norm, act)
        if not start:
            self.msf = MSFBlock(in_planes, features, norm)
        self.crp = CRPBlock(features, 2, norm, act)

    def forward(self, xs, y, output_shape):
        """xs: list of feature maps (B, C_i, H_i, W_i); y: labels (B,) or None.  Returns (B, features, *output_shape)."""
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, y, output_shape) if self.n_blocks > 1 else hs[0]
        h = self.crp(h, y)
        return self.output_convs(h, y)
