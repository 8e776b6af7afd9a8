"""Numerical precision and network wrappers: autocast for the network's forward pass, and ``unwrap``, which finds the
bare network inside any wrapper so that checkpoints always carry the official state-dict keys."""
from contextlib import nullcontext

import torch


def autocast_context(device, amp):
    """Autocast for ``amp`` ('none', 'bf16' or 'fp16') on ``device``'s type; 'none' is a no-op context."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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
