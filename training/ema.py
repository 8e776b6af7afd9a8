"""Exponential moving average (EMA) of the network weights, as in NCSNv2 (``model.ema``, ``model.ema_rate``).

After every optimizer step, ``shadow = ema_rate * shadow + (1 - ema_rate) * param`` for every parameter; buffers are
copied as they are.  The shadow is a state dict of the bare network (:func:`training.precision.unwrap`: the official
keys, no ``module.`` / ``_orig_mod.`` prefix), saved in checkpoints under ``ema`` and loaded for sampling and
evaluation instead of the raw weights when a checkpoint has it (:func:`training.checkpoint.load_trained`).
"""
import copy

import torch

from training.precision import unwrap


class EMA:
    """The moving average of ``model``'s weights, started from its current weights."""

    def __init__(self, model, rate):
        if not 0 <= rate < 1:
            raise ValueError(f"ema_rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.shadow = {}
        self.reset(model)

    def reset(self, model):
        """Start the average again from ``model``'s current weights."""
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        """One step of the average towards ``model``'s current weights (call it after each optimizer step)."""
        bare = unwrap(model)
        params = dict(bare.named_parameters())
        for name, value in bare.state_dict().items():
            if name in params:
                self.shadow[name].mul_(self.rate).add_(value, alpha=1 - self.rate)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self):
        """The averaged weights: a state dict of the bare network (what a checkpoint's ``ema`` holds)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state):
        """Take the averaged weights of a checkpoint's ``ema`` (keys and shapes checked beforehand)."""
        for name, value in state.items():
            self.shadow[name].copy_(value)

    def network(self, model):
        """A copy of the bare ``model`` holding the averaged weights, in eval mode and without gradients."""
        bare = unwrap(model)
        grads = {n: p.grad for n, p in bare.named_parameters()}
        try:
            for p in bare.parameters():                # not copied with the network
                p.grad = None
            clone = copy.deepcopy(bare)
        finally:
            for n, p in bare.named_parameters():
                p.grad = grads[n]
        clone.load_state_dict(self.shadow)
        return clone.eval().requires_grad_(False)
