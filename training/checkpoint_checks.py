"""Validation of a checkpoint's training state before a resume: every field (step, optimizer, random states, stream
positions, scaler, EMA weights) is checked against the objects it will be restored into, and a problem is one UserError naming
the file and the field.  Nothing is modified here."""
import math

import torch

from compute.precision import unwrap
from errors import UserError, describe
from training.checkpoint import check_model_state
from training.rng import check_rng_state


def check_training_state(state, *, model, optimizer, path, streams=None, scaler=None):
    """Raise one UserError naming ``path`` and the field if a checkpoint's training state cannot be restored into
    these objects (wrong type, structure, shape or range); changes nothing.  The EMA weights (``ema``) are checked
    whenever the file has them: they are what sampling uses."""
    def bad(field, problem):
        raise UserError(f"cannot resume from {path}: field '{field}' {problem}")

    if "version" in state and not is_int(state["version"]):
        bad("version", f"must be an int, not {describe(state['version'])}")
    step = state.get("step")
    if step is not None and not (is_int(step) and step >= 0):
        bad("step", f"must be an int >= 0 (or absent), not {describe(step)}")
    cfg = state.get("config")
    if cfg is not None and not (isinstance(cfg, dict) and all(isinstance(v, dict) or v is None for v in cfg.values())):
        bad("config", "must be a dict of config sections")
    check_model_state(model, state, path)
    if state.get("optimizer") is not None:
        problem = _check_optimizer_state(state["optimizer"], optimizer)
        if problem:
            bad(*problem)
    if state.get("rng") is not None:
        problem = check_rng_state(state["rng"])
        if problem:
            bad(*problem)
    saved_streams = state.get("streams")
    if saved_streams is not None and not isinstance(saved_streams, dict):
        bad("streams", f"must be a dict, not a {type(saved_streams).__name__}")
    for k, s in (streams or {}).items():
        if k in (saved_streams or {}):
            problem = _check_stream_state(k, saved_streams[k], s)
            if problem:
                bad(*problem)
    if state.get("scaler") is not None:
        problem = _check_scaler_state(state["scaler"]) if scaler is not None and scaler.is_enabled() else None
        if not isinstance(state["scaler"], dict):
            problem = ("scaler", f"must be a dict, not a {type(state['scaler']).__name__}")
        if problem:
            bad(*problem)
    if state.get("ema") is not None:
        problem = _check_ema_state(state["ema"], model)
        if problem:
            bad(*problem)


def _check_ema_state(saved, model):
    """The moving average of the weights: a tensor of the network's shape and dtype for each of its state-dict
    keys, finite."""
    if not isinstance(saved, dict):
        return "ema", f"must be a dict of tensors, not a {type(saved).__name__}"
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in saved]
    if missing:
        return f"ema.{missing[0]}", f"is missing ({len(missing)} of the network's {len(own)} tensors are)"
    unexpected = [k for k in saved if k not in own]
    if unexpected:
        name = unexpected[0] if isinstance(unexpected[0], str) else describe(unexpected[0])
        return f"ema.{name}", "belongs to no tensor of this config's network"
    for k, v in saved.items():
        mine = own[k]
        if not isinstance(v, torch.Tensor):
            return f"ema.{k}", f"must be a tensor, not {describe(v)}"
        if tuple(v.shape) != tuple(mine.shape) or v.dtype != mine.dtype:
            return f"ema.{k}", (f"is a {list(v.shape)} {v.dtype} tensor, the network's {list(mine.shape)} "
                                f"{mine.dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return f"ema.{k}", "holds non-finite values"
    return None


# per-group hyperparameters: non-negative finite numbers, flags
_GROUP_NUMBERS = ("lr", "eps", "weight_decay", "momentum", "dampening", "alpha")
_GROUP_FLAGS = ("amsgrad", "nesterov", "centered")
_NON_NEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")
HYPERPARAMETERS = _GROUP_NUMBERS + _GROUP_FLAGS + ("betas",)


def _check_optimizer_state(saved, optimizer):
    if not isinstance(saved, dict):
        return "optimizer", f"must be a dict, not a {type(saved).__name__}"
    for key in ("state", "param_groups"):
        if key not in saved:
            return f"optimizer.{key}", "is missing"
    groups, own = saved["param_groups"], optimizer.param_groups
    if not isinstance(groups, (list, tuple)):
        return "optimizer.param_groups", f"must be a list, not a {type(groups).__name__}"
    if len(groups) != len(own):
        return "optimizer.param_groups", f"has {len(groups)} parameter groups, this config's optimizer {len(own)}"
    params, group_of = {}, {}
    for i, (g, mine) in enumerate(zip(groups, own)):
        field = f"optimizer.param_groups[{i}]"
        if not isinstance(g, dict):
            return field, f"must be a dict, not a {type(g).__name__}"
        ids = g.get("params")
        if not (isinstance(ids, (list, tuple)) and all(is_int(x) for x in ids)):
            return f"{field}.params", "must be a list of parameter indices"
        if len(ids) != len(mine["params"]):
            return f"{field}.params", f"has {len(ids)} parameters, this network {len(mine['params'])}"
        for pid, p in zip(ids, mine["params"]):
            if pid in params:
                return f"{field}.params", f"lists parameter {pid} twice"
            params[pid], group_of[pid] = p, g
        for key in (k for k in mine if k in _GROUP_NUMBERS + _GROUP_FLAGS + ("betas",)):
            if key not in g:
                return f"{field}.{key}", (f"is missing (does the file hold the state of another optimizer than "
                                          f"{type(optimizer).__name__}?)")
            v = g[key]
            if key in _GROUP_NUMBERS:       # an int must fit the int64 that torch's kernels take it as
                ok = is_number(v) and math.isfinite(v) and v >= 0 and (isinstance(v, float) or v < 2 ** 63)
            elif key == "betas":
                ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v)
            else:
                ok = isinstance(v, bool)
            if not ok:
                return f"{field}.{key}", f"has an invalid value {describe(v)}"
    per_param = saved["state"]
    if not isinstance(per_param, dict):
        return "optimizer.state", f"must be a dict, not a {type(per_param).__name__}"
    for pid, s in per_param.items():
        field = f"optimizer.state[{describe(pid)}]"
        if pid not in params:
            return field, "belongs to no parameter of the saved parameter groups"
        if not isinstance(s, dict):
            return field, f"must be a dict, not a {type(s).__name__}"
        p = params[pid]
        for k, v in s.items():
            if k == "step":
                if isinstance(v, torch.Tensor):
                    if v.numel() != 1 or v.dtype == torch.bool or v.is_complex():
                        return f"{field}.step", f"must be a number or a one-element tensor ({describe(v)})"
                    v = v.item()
                if not (is_number(v) and math.isfinite(v) and v >= 0):
                    return f"{field}.step", f"must be a finite number >= 0, not {describe(v)}"
            elif isinstance(v, torch.Tensor):
                if tuple(v.shape) != tuple(p.shape):
                    return f"{field}.{k}", f"has shape {list(v.shape)}, its parameter {list(p.shape)}"
                if not v.is_floating_point():
                    return f"{field}.{k}", f"must be a floating-point tensor, not {v.dtype}"
                if not bool(torch.isfinite(v).all()):
                    return f"{field}.{k}", "holds non-finite values"
                if k in _NON_NEGATIVE_STATE and bool((v < 0).any()):
                    return f"{field}.{k}", "holds negative values"
            elif not (v is None and k == "momentum_buffer"):
                return f"{field}.{k}", f"must be a tensor, not a {type(v).__name__}"
        if s:                       # an empty state is initialised at the next step; a partial one fails there
            g = group_of[pid]
            need = []
            if isinstance(optimizer, torch.optim.Adam):
                need = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if g.get("amsgrad") else [])
            elif isinstance(optimizer, torch.optim.RMSprop):
                need = (["step", "square_avg"] + (["momentum_buffer"] if g.get("momentum", 0) > 0 else [])
                        + (["grad_avg"] if g.get("centered") else []))
            missing = [k for k in need if s.get(k) is None]
            if missing:
                return f"{field}.{missing[0]}", (f"is missing (does the file hold the state of another optimizer "
                                                 f"than {type(optimizer).__name__}?)")
    return None


def _check_stream_state(name, saved, stream):
    field = f"streams.{name}"
    if not isinstance(saved, dict):
        return field, f"must be a dict, not a {type(saved).__name__}"
    if hasattr(stream, "batches_per_epoch"):                # a BatchStream: a position (epoch, batch)
        for key in ("epoch", "batch"):
            if key not in saved:
                return f"{field}.{key}", "is missing"
            if not (is_int(saved[key]) and saved[key] >= 0):
                return f"{field}.{key}", f"must be an int >= 0, not {describe(saved[key])}"
        seed = saved.get("seed", getattr(stream, "seed", 0))
        if seed is not None and not (is_int(seed) and -2 ** 63 <= seed and seed + saved["epoch"] < 2 ** 63):
            return f"{field}.seed", f"must be an int within the generator's range, not {describe(seed)}"
    elif hasattr(stream, "generator"):                       # FreshSamples: a generator state
        g = saved.get("generator")
        if not (isinstance(g, torch.Tensor) and g.dtype == torch.uint8 and g.dim() == 1):
            return f"{field}.generator", f"must be a 1-D uint8 generator state tensor ({describe(g)})"
        try:
            torch.Generator().set_state(g)
        except RuntimeError as e:
            return f"{field}.generator", f"is not a valid generator state ({' '.join(str(e).split())[:120]})"
    return None


def _check_scaler_state(saved):
    if not isinstance(saved, dict):
        return "scaler", f"must be a dict, not a {type(saved).__name__}"
    for key, ok in (("scale", lambda v: is_number(v) and math.isfinite(v) and v > 0),
                    ("growth_factor", lambda v: is_number(v) and math.isfinite(v) and v > 0),
                    ("backoff_factor", lambda v: is_number(v) and math.isfinite(v) and v > 0),
                    ("growth_interval", lambda v: is_int(v) and v > 0),
                    ("_growth_tracker", lambda v: is_int(v) and v >= 0)):
        if key not in saved:
            return f"scaler.{key}", "is missing"
        if not ok(saved[key]):
            return f"scaler.{key}", f"has an invalid value {describe(saved[key])}"
    return None


def nested_get(d, *keys):
    """d[k1][k2]... or None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)
