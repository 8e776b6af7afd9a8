"""Instance normalisation "++" used by the RefineNets (Song & Ermon 2019, Appendix A.1, Eq. (8)).

For a feature map x (B, F, H, W) with per-channel spatial means mu_k and per-channel spatial std s_k::

    z_k = gamma_k * (x_k - mu_k) / s_k + beta_k + alpha_k * (mu_k - m) / sqrt(v + eps)

where m and v are the mean and the *unbiased* variance of (mu_1, ..., mu_F) over the channels.  Plain instance
normalisation discards the channel means mu_k (and with them the colour of an image); the alpha term puts their
standardised version back.

``ConditionalInstanceNorm2dPlus`` looks gamma, alpha, beta up per noise level (an ``nn.Embedding`` indexed by the
labels ``y``); ``InstanceNorm2dPlus`` holds one set of per-channel parameters (the single-noise baseline).  Attribute
names, shapes, registration order and initialisation follow the official code so that released checkpoints load.

Precision and layout: the output has x's dtype and memory format.  For float16 / bfloat16 inputs (autocast) the
statistics (means, variances, their inverse square roots; ``F.instance_norm``'s kernels accumulate in float32
themselves) are computed in float32, and only the small (B, F) factors
are cast to x's dtype before they meet the full-size tensor: float16 squares overflow beyond |x - mu| ~ 256, and the
float32 gamma, alpha, beta would otherwise promote every activation after the norm to float32.  A channels-last input
is normalised with layout-preserving reductions instead of ``F.instance_norm`` (which copies to NCHW).  Unfused
(``compute.fused_norm: false``), float32 and float64 NCHW inputs take exactly the official operations; fused, the
same formula in fewer full-size passes (:func:`instance_norm_plus`).
"""
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5  # both for the instance norm itself and for the standardisation of the channel means


def statistics_dtype(x):
    """The dtype in which x's statistics are computed: float32 for float16 / bfloat16, else x's own dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def standardized_channel_means(x, eps=EPS):
    """(mu - m) / sqrt(v + eps) for x (B, F, H, W); mu (B, F) are spatial means, m, v their mean and unbiased
    variance over the F channels (``torch.var`` default, as in the official code).  Returns (B, F), in
    ``statistics_dtype(x)`` (float32 for half-precision x: means of scale ~256 would overflow the float16 variance)."""
    means = x.mean(dim=(2, 3), dtype=statistics_dtype(x))         # (B, F)
    m = means.mean(dim=1, keepdim=True)                            # (B, 1)
    v = means.var(dim=1, keepdim=True)                             # (B, 1), unbiased
    return (means - m) / torch.sqrt(v + eps)


def _is_channels_last_only(x):
    """True for a 4-D x laid out channels-last and not also NCHW-contiguous (e.g. not H = W = 1)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _instance_norm(x):
    """Plain instance normalisation (biased variance, no affine) of x (B, F, H, W), in x's dtype and layout.

    NCHW: ``F.instance_norm`` (the official call).  Channels-last: ``F.instance_norm`` would reshape to
    (1, B*F, H, W) and so copy to NCHW and back; the same formula, (x - mu) / sqrt(var + eps), is taken with
    per-channel reductions over (H, W) that keep the layout, the statistics in ``statistics_dtype(x)``."""
    if not _is_channels_last_only(x):
        return F.instance_norm(x, eps=EPS)
    var, mu = torch.var_mean(x.to(statistics_dtype(x)), dim=(2, 3), correction=0, keepdim=True)   # (B, F, 1, 1)
    return (x - mu.to(x.dtype)) * torch.rsqrt(var + EPS).to(x.dtype)


def _instance_norm_plus(x, gamma, alpha, beta):
    """The "++" formula in the official order of operations (the faithful reference): gamma, alpha (B or 1, F), beta
    (B or 1, F) or None.  Returns (B, F, H, W) in x's dtype and layout: the (B, F) factors are computed in the
    statistics' precision and cast to x's dtype (a no-op for float32 / float64 x with parameters of its dtype)."""
    mean_shift = standardized_channel_means(x)                     # (B, F)
    h = _instance_norm(x)                                          # biased variance, no affine
    h = h + (mean_shift * alpha).to(x.dtype)[..., None, None]      # (B, F, 1, 1) broadcast over H, W
    h = gamma.to(x.dtype)[..., None, None] * h
    if beta is not None:
        h = h + beta.to(x.dtype)[..., None, None]
    return h


def spatial_mean_and_variance(x):
    """The per-(example, channel) mean and biased variance over (H, W) of x (B, F, H, W), each (B, F) in
    ``statistics_dtype(x)``.  Float32 / float64 x: the mean, then the variance about it (two passes, no
    cancellation).  Half-precision x: one float32 copy, whose mean and mean square give the variance as
    E[x^2] - mu^2, two full-size passes fewer; its cancellation in float32 (relative error ~2^-24 mu^2 / var) stays far
    below the rounding that x's own 8- or 11-bit mantissa carries (~2^-9 mu^2 / var for bfloat16;
    tests/test_speed.py)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        xs = x.float()
        mu = xs.mean(dim=(2, 3))
        return mu, (xs.square_().mean(dim=(2, 3)) - mu.square()).clamp(min=0)
    mu = x.mean(dim=(2, 3), keepdim=True)
    return mu[..., 0, 0], (x - mu).square().mean(dim=(2, 3))


def _instance_norm_plus_fused(x, gamma, alpha, beta):
    """The same formula as one affine map per (example, channel): z = x * scale + shift with
    scale = gamma / s_k and shift = gamma * alpha * (mu_k - m) / sqrt(v + eps) + beta - mu_k * scale.

    The statistics (:func:`spatial_mean_and_variance`) and one fused multiply-add over the tensor, instead of
    instance_norm's statistics plus three full-size passes; the result equals the reference up to floating-point
    rounding (tests/test_speed.py).  The (B, F) factors are computed in ``statistics_dtype(x)`` and scale and shift
    are cast to x's dtype for the full-size multiply-add: the output has x's dtype and layout."""
    mu, var = spatial_mean_and_variance(x)                         # (B, F) each
    m = mu.mean(dim=1, keepdim=True)                               # (B, 1)
    v = mu.var(dim=1, keepdim=True)                                # (B, 1), unbiased (as official)
    scale = gamma * torch.rsqrt(var + EPS)                         # (B, F)
    shift = gamma * alpha * (mu - m) * torch.rsqrt(v + EPS) - mu * scale
    if beta is not None:
        shift = shift + beta
    return torch.addcmul(shift.to(x.dtype)[..., None, None], x, scale.to(x.dtype)[..., None, None])


def _instance_norm_plus_folded(x, gamma, alpha, beta):
    """The "++" formula for an NCHW x under autograd: instance_norm's own computation (one batch-norm kernel over x
    viewed as (1, B*F, H, W)) with the whole affine part folded into that kernel's per-channel weight and bias,
    z = gamma * x_hat + (gamma * alpha * (mu_k - m) / sqrt(v + eps) + beta): one full-size kernel forward and one
    backward, instead of instance_norm plus three full-size passes and their backward.  The channel-mean term
    (:func:`standardized_channel_means`) is differentiated as in the official form; the result equals the
    reference up to floating-point rounding (tests/test_speed.py).  The weight and bias stay in the statistics'
    precision (the kernel accepts float32 factors for a half-precision x); the output has x's dtype."""
    b, f, h, w = x.shape
    bias = gamma * alpha * standardized_channel_means(x)           # (B, F)
    if beta is not None:
        bias = bias + beta
    weight = gamma.expand(b, f).to(bias.dtype)
    z = F.batch_norm(x.reshape(1, b * f, h, w), None, None, weight.reshape(b * f), bias.reshape(b * f),
                     training=True, eps=EPS)
    return z.view(b, f, h, w)


def instance_norm_plus(x, gamma, alpha, beta, fused=False):
    """InstanceNorm++ of x (B, F, H, W): the official order of operations, or (``fused``) a fused form of the same
    formula: where no gradient is taken (sampling, test losses) the one-pass affine map
    (:func:`_instance_norm_plus_fused`); under autograd for an NCHW x (training on a CPU) the affine part folded into
    instance_norm's own kernel (:func:`_instance_norm_plus_folded`), whose backward is one kernel too (the affine
    map's backward would be a chain of full-size passes, measured slower in training, docs/speed.md).  A
    channels-last x under autograd (a CUDA training network) keeps the official form with layout-preserving
    reductions (:func:`_instance_norm`).  The output has x's dtype and layout."""
    if fused and not (torch.is_grad_enabled() and x.requires_grad):
        return _instance_norm_plus_fused(x, gamma, alpha, beta)
    if fused and not _is_channels_last_only(x):
        return _instance_norm_plus_folded(x, gamma, alpha, beta)
    return _instance_norm_plus(x, gamma, alpha, beta)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """CondInstanceNorm++: gamma, alpha, beta = embed(y).chunk(3) (official order).  ``forward(x, y)``.

    ``embed.weight`` is (num_classes, 3F) with bias (2F without); the gamma/alpha columns start at N(1, 0.02) and the
    beta columns at 0.
    """

    def __init__(self, num_features, num_classes, bias=True):
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.fused = False          # a speed option (compute/precision.py), not a weight: not in the state dict
        n_params = 3 if bias else 2
        self.embed = nn.Embedding(num_classes, n_params * num_features)
        with torch.no_grad():
            self.embed.weight[:, :2 * num_features].normal_(1, 0.02)
            self.embed.weight[:, 2 * num_features:].zero_()

    def forward(self, x, y):
        """x (B, F, H, W), y (B,) long noise-level indices -> (B, F, H, W)."""
        params = self.embed(y)                                     # (B, 3F) or (B, 2F)
        if self.bias:
            gamma, alpha, beta = params.chunk(3, dim=-1)           # each (B, F)
        else:
            (gamma, alpha), beta = params.chunk(2, dim=-1), None
        return instance_norm_plus(x, gamma, alpha, beta, self.fused)


class InstanceNorm2dPlus(nn.Module):
    """Unconditional InstanceNorm++: per-channel parameters alpha, gamma ~ N(1, 0.02) and beta = 0.  ``forward(x)``."""

    def __init__(self, num_features, bias=True):
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.fused = False          # see ConditionalInstanceNorm2dPlus
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        if bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        """x (B, F, H, W) -> (B, F, H, W)."""
        beta = self.beta[None] if self.bias else None              # (1, F)
        return instance_norm_plus(x, self.gamma[None], self.alpha[None], beta, self.fused)
