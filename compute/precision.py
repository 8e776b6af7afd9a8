"""How the network is computed: autocast (``training.amp`` / ``sampling.amp``), memory layout, fused kernels and
``torch.compile`` (the ``compute`` section), in one place that the runners and the benchmark both call; and ``unwrap``,
which finds the bare network inside any wrapper so that checkpoints always carry the official state-dict keys.

None of these options changes the maths: they change floating-point rounding only (tests/test_speed.py bounds how
much).  The faithful reference path is ``amp: none`` with ``compute: {channels_last: false, fused_norm: false,
fast_elu: false, pool_as_conv: false, compile: false}``: the official order of operations in float32, eager, NCHW.
"""
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from errors import UserError

FAITHFUL = {"channels_last": False, "fused_norm": False, "fast_elu": False, "pool_as_conv": False,
            "compile": False, "compile_mode": "default"}


NATIVE_BF16_CAPABILITY = (8, 0)      # Ampere and later: bf16 tensor cores; Volta (7.0) and Turing (7.5) emulate bf16


def native_bf16(device):
    """True where ``device`` computes bf16 matrix products in hardware: CUDA GPUs of compute capability 8.0 or more
    (asked of ``device``'s own index, default the current device), CPUs whose oneDNN has bf16 kernels (AVX-512 BF16 /
    AMX).  ``torch.cuda.is_bf16_supported()`` alone is not enough: it also counts GPUs that only emulate bf16 (V100,
    T4), where bf16 is slower than float32.  Elsewhere (e.g. AVX2-only CPUs) bf16 convolutions fall back to slow
    reference loops, many times slower than float32."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = torch.cuda.current_device() if device.index is None else device.index
        return (tuple(torch.cuda.get_device_capability(index)) >= NATIVE_BF16_CAPABILITY
                and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


AUTO_BF16_MIN_SIZE = 16     # measured: at 8x8 the network is too small for bf16 to pay (docs/speed.md)


def resolve_amp(amp, device, image_size=None):
    """The autocast dtype name that ``amp`` means on ``device``: 'auto' is 'bf16' where the device computes bf16
    natively and the images are at least AUTO_BF16_MIN_SIZE pixels wide, 'none' otherwise."""
    if amp != "auto":
        return amp
    big = image_size is None or image_size >= AUTO_BF16_MIN_SIZE
    return "bf16" if big and native_bf16(device) else "none"


def autocast_context(device, amp):
    """Autocast for ``amp`` ('none', 'bf16' or 'fp16'; 'auto' resolved) on ``device``'s type; 'none' is a no-op."""
    amp = resolve_amp(amp, device)
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def memory_format(compute):
    return torch.channels_last if compute.channels_last else torch.contiguous_format


def prepare_model(model, compute, training=False):
    """Apply ``compute``'s layout and kernels to a bare network on its device, in place (before any wrapper):
    channels-last weights, the fused InstanceNorm++ (every module with a ``fused`` switch: the affine map where no
    gradient is taken, folded into instance_norm's kernel when an NCHW network trains), the ELU from ``exp``
    (``fast``) and the CRP pool as a depthwise convolution (``as_conv``).
    A network for training on a CPU stays NCHW whatever ``compute.channels_last`` says: measured there,
    channels-last made training steps slower (0.95x digits, 0.72x MNIST; docs/speed.md).  State-dict keys are
    unchanged."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = compute.fused_norm
        if hasattr(module, "fast"):
            module.fast = compute.fast_elu
        if hasattr(module, "as_conv"):
            module.as_conv = compute.pool_as_conv
    on_cpu = next(model.parameters(), torch.empty(0)).device.type == "cpu"
    if training and on_cpu:
        return model
    return model.to(memory_format=memory_format(compute))


def to_layout(x, compute):
    """An input batch in ``compute``'s memory layout (4-D tensors only; anything else is returned as it is)."""
    return x.contiguous(memory_format=torch.channels_last) if compute.channels_last and x.dim() == 4 else x


def _usable(folder):
    """``folder`` for inductor's caches, created; a UserError if it cannot be created or written."""
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", folder)
    except OSError as e:
        raise UserError(f"torch.compile's kernel cache {folder} (TORCHINDUCTOR_CACHE_DIR) is not a writable folder: "
                        f"{e.strerror or e}; unset TORCHINDUCTOR_CACHE_DIR or point it at a writable folder") from e
    return folder


def unusable_inductor_cache():
    """Why the TORCHINDUCTOR_CACHE_DIR of the environment cannot be used (one line), or None.  Asked before
    torchvision is imported: that import imports ``torch._dynamo``, which creates the folder and fails with a
    traceback where it cannot."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if value is None:
        return None
    try:
        _usable(os.path.abspath(value))
    except UserError as e:
        return str(e)
    return None


def inductor_cache_dir(cache_root):
    """Point TORCHINDUCTOR_CACHE_DIR at ``cache_root``/inductor unless the user chose another folder; return the
    folder inductor will use.  ``import torch._dynamo`` (torchvision imports it) already sets the variable to torch's
    default folder, so a plain ``setdefault`` never takes effect: the variable counts as the user's only when it
    names another folder than that default.  A folder that cannot be created or written is one UserError."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if value is not None:
        _usable(os.path.abspath(value))  # before importing inductor, which creates it with a traceback
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    default = os.path.abspath(default_cache_dir())
    if cache_root is not None and (value is None or os.path.abspath(value) == default):
        value = str(Path(cache_root) / "inductor")
    folder = _usable(os.path.abspath(value or default))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def maybe_compile(model, compute, cache_root=None):
    """``torch.compile(model)`` when ``compute.compile`` asks (else ``model``).  Inductor's caches go under
    ``cache_root``/inductor (e.g. ``<run>/cache``) unless TORCHINDUCTOR_CACHE_DIR names another folder
    (:func:`inductor_cache_dir`), so a second run with the same network and shapes reuses the compiled kernels
    instead of compiling again; the first call is timed and logged."""
    if not compute.compile:
        return model
    inductor_cache_dir(cache_root)
    compiled = torch.compile(model, mode=None if compute.compile_mode == "default" else compute.compile_mode)
    return _TimeFirstCall(compiled)


class _TimeFirstCall(torch.nn.Module):
    """Logs how long the first call took (where torch.compile compiles); ``unwrap`` sees through it."""

    def __init__(self, compiled):
        super().__init__()
        self._orig_mod = compiled
        self._timed = False

    def forward(self, *args, **kwargs):
        if self._timed:
            return self._orig_mod(*args, **kwargs)
        start = time.perf_counter()
        out = self._orig_mod(*args, **kwargs)
        self._timed = True
        logging.info("torch.compile: the first call (compiling, or loading from the cache %s) took %.1f s",
                     os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default)"), time.perf_counter() - start)
        return out


def score_function(model, device, amp, compute, image_size=None):
    """The score ``f(x, *labels)`` that the samplers call: the network under ``amp``'s autocast (the output back in
    float32), its input in ``compute``'s layout (a no-op for a state already in it: start chains with
    :func:`to_layout`).  With amp 'none' and NCHW it is the network itself."""
    amp = resolve_amp(amp, device, image_size)
    if amp == "none" and not compute.channels_last:
        return model
    context = autocast_context(device, amp)

    def score(x, *labels):
        with context:
            out = model(to_layout(x, compute), *labels)
        return out.float()
    return score


def unwrap(model):
    """The bare network inside DistributedDataParallel / DataParallel (``.module``) and ``torch.compile``
    (``._orig_mod``), in any nesting: its state-dict keys have neither a ``module.`` nor an ``_orig_mod.`` prefix."""
    while True:
        if isinstance(model, torch.nn.Module) and "_orig_mod" in model._modules:
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def nonfinite_parameters(model):
    """Names (official keys, see :func:`unwrap`) of the parameters of ``model`` holding a NaN or an infinity."""
    return [n for n, p in unwrap(model).named_parameters() if not bool(torch.isfinite(p).all())]
