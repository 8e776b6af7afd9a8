"""Exponential moving average (EMA) of the network weights, as in NCSNv2 (``model.ema``, ``model.ema_rate``).

After every optimizer step, ``shadow = ema_rate * shadow + (1 - ema_rate) * param`` for every parameter; buffers are
copied as they are.  The update takes three multi-tensor calls (``torch._foreach_mul_``, ``_foreach_add_``,
``_foreach_copy_``) over cached lists of the network's tensors instead of two kernels per tensor: the same
arithmetic (bit for bit on the CPU); the lists are built again when the network's tensors are not the cached ones.
The shadow is a state dict of the bare network (:func:`compute.precision.unwrap`: the official keys, no
``module.`` / ``_orig_mod.`` prefix), saved in checkpoints under ``ema`` and loaded for sampling and
evaluation instead of the raw weights when a checkpoint has it (:func:`training.checkpoint.load_trained`).
"""
import copy

import torch

from compute.precision import unwrap


class EMA:
    """The moving average of ``model``'s weights, started from its current weights."""

    def __init__(self, model, rate):
        if not 0 <= rate < 1:
            raise ValueError(f"ema_rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.shadow = {}
        self._lists = None              # (key, shadow params, params, shadow buffers, buffers): see _tensor_lists
        self.reset(model)

    def reset(self, model):
        """Start the average again from ``model``'s current weights."""
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
        self._lists = None

    def _tensor_lists(self, bare):
        """The shadow tensors paired with the network's parameters and buffers (the entries of its state dict), built
        once and reused while the network holds the same tensor objects (another network, or a parameter or buffer
        replaced by a new tensor, builds them again)."""
        key = (bare, *bare.parameters(), *bare.buffers())
        cached = self._lists
        if cached is not None and len(cached[0]) == len(key) and all(a is b for a, b in zip(cached[0], key)):
            return cached[1:]
        params = {id(p) for p in bare.parameters()}
        lists = ([], [], [], [])
        for name, value in bare.state_dict(keep_vars=True).items():
            i = 0 if id(value) in params else 2
            lists[i].append(self.shadow[name])
            lists[i + 1].append(value.detach())
        self._lists = (key, *lists)
        return lists

    @torch.no_grad()
    def update(self, model):
        """One step of the average towards ``model``'s current weights (call it after each optimizer step)."""
        shadow_params, params, shadow_buffers, buffers = self._tensor_lists(unwrap(model))
        if params:
            torch._foreach_mul_(shadow_params, self.rate)
            torch._foreach_add_(shadow_params, params, alpha=1 - self.rate)
        if buffers:
            torch._foreach_copy_(shadow_buffers, buffers)

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
