"""Checkpoints: one format, written atomically, read without executing code from the file.

A checkpoint is a dict ``{version, step, model, optimizer, config, sigmas, rng, streams[, scaler][, ema]}`` whose
``model`` (and ``ema``, the moving average of the weights with ``model.ema``: training/ema.py) holds the official
state-dict keys (no ``module.`` / ``_orig_mod.`` prefix); the official list format
``[state_dict with 'module.' prefix, optimizer state]`` loads too.
"""
import io
import logging
import re
from pathlib import Path

import torch

from atomic import atomic_write
from compute.precision import unwrap
from configs import config_to_dict
from errors import UserError
from training.rng import rng_state

CHECKPOINT_VERSION = 2
_SNAPSHOT = re.compile(r"checkpoint_(\d+)\.pth")


def snapshot_step(path):
    """The step of a numbered snapshot ``checkpoint_{step}.pth``; None for any other file name."""
    m = _SNAPSHOT.fullmatch(Path(path).name)
    return int(m[1]) if m else None


def save_checkpoint(paths, *, model, optimizer, step, sigmas, config, streams=None, scaler=None, ema=None):
    """Serialise the full training state once and write it atomically to every path in ``paths`` (with ``ema``, a
    :class:`training.ema.EMA`, its averaged weights under ``ema``).

    A ``checkpoint.pth`` among them is written last, so that it never exists without its numbered snapshot; a
    process killed between two files leaves a complete newer ``checkpoint_{step}.pth`` that
    :func:`resume_checkpoint_path` resumes from.
    """
    state = {"version": CHECKPOINT_VERSION, "step": step, "model": unwrap(model).state_dict(),
             "optimizer": optimizer.state_dict(), "config": config_to_dict(config),
             "sigmas": None if sigmas is None else sigmas.detach().cpu(),
             "rng": rng_state(),
             "streams": {k: stream_state(s) for k, s in (streams or {}).items()}}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    for p in sorted(paths, key=lambda p: Path(p).name == "checkpoint.pth"):     # stable: the others keep their order
        atomic_write(p, buf.getvalue(), what="checkpoint ", sync_folder=True,
                     note=f"; the previous {Path(p).name} (if any) is unchanged")


def stream_state(stream):
    state = dict(stream.state_dict())
    if getattr(stream, "seed", None) is not None:
        state["seed"] = int(stream.seed)
    return state


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint without executing code from it (``weights_only``).

    Returns a dict with at least ``model`` and ``optimizer``; the official list format
    ``[state_dict with 'module.' prefix, optimizer state]`` becomes ``{"model", "optimizer", "step": None}``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:      # torch raises many types for truncated/corrupt/unsafe files; all mean "bad file"
        text = " ".join(str(e).split())
        # a builtin's name: 'builtins.getattr' in torch 2.4, 'getattr' in 2.14; the message says the short one
        found = re.search(r"Unsupported global: GLOBAL (?:builtins\.)?(\S+)", text)
        if found:
            raise UserError(f"refusing to load checkpoint {path}: it holds Python objects ({found[1]}), not only "
                            f"tensors and plain data, and loading them could run code") from e
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        first = found[1] if found else re.split(r"(?<=\.) ", text, maxsplit=1)[0]
        raise UserError(f"cannot read checkpoint {path} (truncated, corrupt or not a PyTorch file): "
                        f"{type(e).__name__}{': ' + first if first else ''}") from e
    if isinstance(state, (list, tuple)) and len(state) >= 1 and isinstance(state[0], dict):
        state = {"model": state[0], "optimizer": state[1] if len(state) > 1 else None, "step": None}
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path} is not an NCSN checkpoint (expected a dict with 'model' or the official list)")
    # the official DataParallel "module." prefix (and a compiled network's "_orig_mod.", should a file carry one)
    for key in ("model", "ema"):
        if isinstance(state.get(key), dict):
            state[key] = {_bare_key(k): v for k, v in state[key].items()}
    return state


def _bare_key(key):
    return re.sub(r"^(module\.|_orig_mod\.)+", "", key) if isinstance(key, str) else key


def load_model_state(model, state, path, key="model"):
    """Strictly load the weights ``state[key]``; an architecture or config mismatch is one clear error naming the
    file (and the field, for another key than ``model``)."""
    check_model_state(model, state, path, key)
    try:
        unwrap(model).load_state_dict(state[key])
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise UserError(f"checkpoint {path}{_field(key)} does not fit the network of this config: "
                        f"{detail[:300]}") from e


def _field(key):
    return "" if key == "model" else f" field '{key}'"


def check_model_state(model, state, path, key="model"):
    """Raise the UserError of :func:`load_model_state` if the weights ``state[key]`` do not fit ``model``; changes
    nothing."""
    own, saved = unwrap(model).state_dict(), state[key]
    if not isinstance(saved, dict):
        raise UserError(f"checkpoint {path}{_field(key)} must be a dict of tensors, not a {type(saved).__name__}")
    problems = []
    def shape(v):
        return list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__

    for kind, keys in (("differ in shape", [k for k in own if k in saved and shape(own[k]) != shape(saved[k])]),
                       ("are missing", [k for k in own if k not in saved]),
                       ("are unexpected", [k for k in saved if k not in own])):
        if keys:
            first = keys[0]
            example = (f"{first}: {shape(saved[first])} in the file, {shape(own[first])} in the network"
                       if kind == "differ in shape" else first)
            problems.append(f"{len(keys)} tensors {kind} (e.g. {example})")
    if problems:
        raise UserError(f"checkpoint {path}{_field(key)} does not fit the network of this config: "
                        f"{'; '.join(problems)}; was it trained with other model/data settings (ngf, num_classes, "
                        f"channels)?")


def load_trained(model, path, device, eval_mode=True):
    """``model`` on ``device`` with the weights of the checkpoint at ``path`` (in eval mode); returns (model, state).

    The weights are the checkpoint's ``ema`` (the moving average, training/ema.py) when it has them, else its
    ``model``; which one is logged, and :func:`uses_ema` tells it from the returned state."""
    state = load_checkpoint(path, map_location=device)
    model = model.to(device)
    key = "ema" if uses_ema(state) else "model"
    load_model_state(model, state, path, key)
    logging.info("%s: the %s", path, "EMA weights (the moving average of training, model.ema)" if key == "ema"
                 else "raw weights (no EMA in the checkpoint)")
    return (model.eval() if eval_mode else model), state


def uses_ema(state):
    """Whether :func:`load_trained` takes a loaded checkpoint's EMA weights (it has an ``ema`` field)."""
    return state.get("ema") is not None


def weights_digest(model):
    """SHA-256 (hex) of the weights of ``model`` (its bare network's state dict: names, dtypes, shapes, values):
    what identifies the network that drew an export."""
    import hashlib
    h = hashlib.sha256()
    for name, value in unwrap(model).state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
