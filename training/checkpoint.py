"""Checkpoints: one format, written atomically, read without executing code from the file.

A checkpoint is a dict ``{version, step, model, optimizer, config, sigmas, rng, streams[, scaler]}`` whose ``model``
holds the official state-dict keys (no ``module.`` / ``_orig_mod.`` prefix); the official list format
``[state_dict with 'module.' prefix, optimizer state]`` loads too.
"""
import io
import logging
import math
import os
import re
from pathlib import Path

import torch

from configs import config_to_dict
from errors import UserError, describe
from training.precision import unwrap
from training.rng import check_rng_state, rng_state, set_rng_state

CHECKPOINT_VERSION = 2


def atomic_write(path, data):
    """Write bytes to ``path`` through a temporary file and a rename: a crash never leaves a half file.

    A failed write (disk full, no permission) is a UserError; ``path`` then still holds its previous content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if os.name == "posix":                      # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous {path.name} (if any) "
                        f"is unchanged") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(paths, *, model, optimizer, step, sigmas, config, streams=None, scaler=None):
    """Serialise the full training state once and write it atomically to every path in ``paths``.

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
    buf = io.BytesIO()
    torch.save(state, buf)
    for p in sorted(paths, key=lambda p: Path(p).name == "checkpoint.pth"):     # stable: the others keep their order
        atomic_write(p, buf.getvalue())


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
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
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
    state["model"] = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state["model"].items()}
    return state


def load_model_state(model, state, path):
    """Strictly load weights; an architecture or config mismatch is one clear error naming the file."""
    check_model_state(model, state, path)
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise UserError(f"checkpoint {path} does not fit the network of this config: {detail[:300]}") from e


def check_model_state(model, state, path):
    """Raise the UserError of :func:`load_model_state` if the weights do not fit ``model``; changes nothing."""
    own, saved = unwrap(model).state_dict(), state["model"]
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
        raise UserError(f"checkpoint {path} does not fit the network of this config: {'; '.join(problems)}; was it "
                        f"trained with other model/data settings (ngf, num_classes, channels)?")


def load_trained(model, path, device, eval_mode=True):
    """``model`` on ``device`` with the weights of the checkpoint at ``path`` (in eval mode); returns (model, state)."""
    state = load_checkpoint(path, map_location=device)
    model = model.to(device)
    load_model_state(model, state, path)
    return (model.eval() if eval_mode else model), state


# ------------------------------------------------------------------------------------------------------- resuming

_SNAPSHOT = re.compile(r"checkpoint_(\d+)\.pth")
_TEMP = re.compile(r"\.checkpoint.*\.tmp(\d+)")


def find_resume_checkpoint(log_dir, map_location="cpu"):
    """The checkpoint a resumed run continues from, loaded: ``(path, state)``.

    ``checkpoint.pth`` if it loads, unless a loadable ``checkpoint_{step}.pth`` is newer (a save interrupted between
    the two files); else the newest loadable ``checkpoint_{step}.pth`` (by step).  Files that do not load (truncated
    by a crash) are skipped with a warning.  None loadable: a UserError ``cannot resume: ...``.
    """
    log_dir = Path(log_dir)
    main = log_dir / "checkpoint.pth"
    snapshots = sorted(((int(m[1]), p) for p in log_dir.glob("checkpoint_*.pth")
                        if (m := _SNAPSHOT.fullmatch(p.name)) and p.is_file()), key=lambda x: x[0], reverse=True)
    errors, best, floor = [], None, -1
    if main.is_file():
        try:
            best = (main, load_checkpoint(main, map_location))
            step = best[1].get("step")
            # a step that is no valid int (reported by restore_training_state) or unknown (official): keep this file
            floor = step if _is_int(step) and step >= 0 else math.inf
        except UserError as e:
            errors.append(str(e))
            logging.warning("%s; looking for the newest complete checkpoint_{step}.pth", e)
    for n, p in snapshots:
        if n <= floor:
            break
        try:
            state = load_checkpoint(p, map_location)
        except UserError as e:
            errors.append(str(e))
            logging.warning("%s; skipping it", e)
            continue
        if best is not None:
            logging.warning("%s (step %d) is newer than %s (step %d): a save was interrupted between the two files",
                            p.name, n, main.name, floor)
        best = (p, state)
        break
    if best is None:
        if errors:
            raise UserError(f"cannot resume: no loadable checkpoint in {log_dir}: {errors[0]}")
        raise UserError(f"cannot resume: no checkpoint in {log_dir}")
    logging.info("resuming from %s", best[0])
    return best


def resume_checkpoint_path(log_dir):
    """The path of the checkpoint a resumed run continues from (see :func:`find_resume_checkpoint`)."""
    return find_resume_checkpoint(log_dir)[0]


def remove_stale_temp_files(log_dir):
    """Remove the ``.checkpoint*.tmp<pid>`` files of :func:`atomic_write` whose process is dead; return their paths.

    Files of a live process (it may be writing them now) and files whose process cannot be checked are kept.
    """
    removed = []
    for p in Path(log_dir).glob(".checkpoint*.tmp*"):
        m = _TEMP.fullmatch(p.name)
        if not m or not p.is_file() or _process_alive(int(m[1])):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue                    # removed meanwhile
        except OSError as e:
            logging.warning("cannot remove the stale temporary file %s: %s", p, e.strerror or e)
            continue
        removed.append(p)
        logging.info("removed %s, left by a process that ended while saving", p)
    return removed


def _process_alive(pid):
    if os.name != "posix" or pid <= 0:
        return True                     # os.kill(pid, 0) would not be a harmless probe: keep the file
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # alive, someone else's
    return True


def restore_training_state(state, *, model, optimizer, path, streams=None, scaler=None, config=None):
    """Load weights, optimizer, random states and stream positions; return the step to continue from.

    Every field is checked first (:func:`check_training_state`): a bad one is one UserError naming the file and the
    field, and nothing has been changed.  With ``config`` (this invocation's) and a checkpoint that holds its run's
    config, changed settings are applied or refused: optim.lr, weight_decay and (Adam) beta1 and turning amsgrad off
    take effect in the restored optimizer (one log line each); another optim.optimizer, or turning amsgrad on, is
    refused; other changed keys are listed in one warning (they take effect from the next step).
    """
    streams = streams or {}
    # a refused config change first: it says more than the optimizer state that does not fit it
    optim_changes, other_changes = _config_changes(state.get("config"), config, optimizer, path)
    check_training_state(state, model=model, optimizer=optimizer, path=path, streams=streams, scaler=scaler)
    positions = {k: _stream_position(k, state["streams"][k], s, state.get("config"), path)
                 for k, s in streams.items() if k in (state.get("streams") or {})}
    # from here on nothing can fail on the checkpoint's content
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    load_model_state(model, state, path)
    if state.get("optimizer") is not None:
        saved = dict(state["optimizer"])
        # implementation flags (foreach, fused, capturable, maximize, ...) are this machine's optimizer's, not the file's
        saved["param_groups"] = [{**g, **{k: v for k, v in built.items() if k not in _HYPERPARAMETERS}}
                                 for g, built in zip(saved["param_groups"], fresh)]
        try:
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(f"optimizer state in {path} does not fit this config's optimizer: {e}") from e
        if optim_changes is not None:
            _apply_hyperparameters(optimizer, fresh, optim_changes, path)
    if state.get("rng") is not None:
        set_rng_state(state["rng"])
    for k, s in streams.items():
        if k not in positions:
            continue
        saved = positions[k]
        if saved.get("seed") is not None and saved["seed"] != getattr(s, "seed", None):
            # the data order belongs to the run, not to this invocation's --seed
            logging.warning("%s data order continues with the run's seed %d (not --seed's %d)", k,
                            saved["seed"], s.seed)
            s.seed = int(saved["seed"])
        s.load_state_dict(saved)
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if other_changes:
        logging.warning("settings changed since %s take effect from this resume: %s", path,
                        ", ".join(f"{k} {describe(a)} -> {describe(b)}" for k, (a, b) in other_changes.items()))
    if state.get("step") is None:
        logging.warning("%s is an official-format checkpoint without a step; counting steps from 0", path)
        return 0
    return int(state["step"])


def check_training_state(state, *, model, optimizer, path, streams=None, scaler=None):
    """Raise one UserError naming ``path`` and the field if a checkpoint's training state cannot be restored into
    these objects (wrong type, structure, shape or range); changes nothing."""
    def bad(field, problem):
        raise UserError(f"cannot resume from {path}: field '{field}' {problem}")

    if "version" in state and not _is_int(state["version"]):
        bad("version", f"must be an int, not {describe(state['version'])}")
    step = state.get("step")
    if step is not None and not (_is_int(step) and step >= 0):
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


# per-group hyperparameters: non-negative finite numbers, flags
_GROUP_NUMBERS = ("lr", "eps", "weight_decay", "momentum", "dampening", "alpha")
_GROUP_FLAGS = ("amsgrad", "nesterov", "centered")
_NON_NEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")
_HYPERPARAMETERS = _GROUP_NUMBERS + _GROUP_FLAGS + ("betas",)


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
        if not (isinstance(ids, (list, tuple)) and all(_is_int(x) for x in ids)):
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
            if key in _GROUP_NUMBERS:
                ok = _is_number(v) and math.isfinite(v) and v >= 0
            elif key == "betas":
                ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
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
                if not (_is_number(v) and math.isfinite(v) and v >= 0):
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
            if not (_is_int(saved[key]) and saved[key] >= 0):
                return f"{field}.{key}", f"must be an int >= 0, not {describe(saved[key])}"
        seed = saved.get("seed", getattr(stream, "seed", 0))
        if seed is not None and not (_is_int(seed) and -2 ** 63 <= seed and seed + saved["epoch"] < 2 ** 63):
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


def _stream_position(name, saved, stream, saved_config, path):
    """A BatchStream's saved position, converted to this stream's batch size if training.batch_size changed (the
    epoch order does not depend on it: the examples already seen this epoch are skipped).  Raises UserError for a
    position beyond the epoch."""
    saved = dict(saved)
    if not hasattr(stream, "batches_per_epoch"):
        return saved
    n = len(stream.dataset)
    old = _get(saved_config, "training", "batch_size")
    old = min(old, n) if _is_int(old) and old > 0 else None
    if old is not None and old != stream.batch_size:
        batches = -(-n // old)
        if saved["batch"] > batches:
            raise UserError(f"cannot resume from {path}: field 'streams.{name}.batch' is {saved['batch']}, beyond "
                            f"the {batches} batches of an epoch")
        seen = min(saved["batch"] * old, n)
        saved["batch"] = min(seen // stream.batch_size, stream.batches_per_epoch)
        logging.info("%s data stream: batch size %d -> %d, continuing epoch %d after %d examples (batch %d)", name, old,
                     stream.batch_size, saved["epoch"], saved["batch"] * stream.batch_size, saved["batch"])
    elif saved["batch"] > stream.batches_per_epoch:
        raise UserError(f"cannot resume from {path}: field 'streams.{name}.batch' is {saved['batch']}, beyond the "
                        f"{stream.batches_per_epoch} batches of an epoch")
    return saved


def _check_scaler_state(saved):
    if not isinstance(saved, dict):
        return "scaler", f"must be a dict, not a {type(saved).__name__}"
    for key, ok in (("scale", lambda v: _is_number(v) and math.isfinite(v) and v > 0),
                    ("growth_factor", lambda v: _is_number(v) and math.isfinite(v) and v > 0),
                    ("backoff_factor", lambda v: _is_number(v) and math.isfinite(v) and v > 0),
                    ("growth_interval", lambda v: _is_int(v) and v > 0),
                    ("_growth_tracker", lambda v: _is_int(v) and v >= 0)):
        if key not in saved:
            return f"scaler.{key}", "is missing"
        if not ok(saved[key]):
            return f"scaler.{key}", f"has an invalid value {describe(saved[key])}"
    return None


# config keys applied to the restored optimizer (from the optimizer make_optimizer built with this config)
_APPLIED = {"lr": "lr", "weight_decay": "weight_decay", "beta1": "betas", "amsgrad": "amsgrad"}


def _config_changes(saved, config, optimizer, path):
    """(changed optim keys {key: (old, new)} or None without a saved config, other changed keys) between the
    checkpoint's config and this one; raises UserError for a change that cannot take effect on resume."""
    if not isinstance(saved, dict) or config is None:       # a saved config that is no dict: check_training_state
        return None, {}
    new = config_to_dict(config)
    changed = {}
    for section, values in new.items():
        old_values = saved.get(section)
        if not isinstance(values, dict) or not isinstance(old_values, dict):
            if values != old_values and old_values is not None:
                changed[section] = (old_values, values)
            continue
        for key, value in values.items():
            if key in old_values and old_values[key] != value:
                changed[f"{section}.{key}"] = (old_values[key], value)
    optim = {k.split(".", 1)[1]: v for k, v in changed.items() if k.startswith("optim.")}
    other = {k: v for k, v in changed.items() if not k.startswith("optim.")}
    if "optimizer" in optim:
        old, now = optim["optimizer"]
        raise UserError(f"cannot resume {path} with optim.optimizer {now}: the run was trained with {old}, whose "
                        f"state does not carry over; resume with optim.optimizer {old} or start a new run")
    if "amsgrad" in optim and optim["amsgrad"][1] and isinstance(optimizer, torch.optim.Adam):
        raise UserError(f"cannot turn optim.amsgrad on when resuming {path}: the running maximum of the squared "
                        f"gradients over the past steps is not in the checkpoint; resume with amsgrad false or start "
                        f"a new run")
    unknown = [k for k in optim if k not in _APPLIED]
    if unknown:
        raise UserError(f"cannot resume {path} with a changed optim.{unknown[0]}: it cannot be applied to the "
                        f"restored optimizer")
    n_iters = other.pop("training.n_iters", None)
    if n_iters:
        logging.info("training.n_iters: %s -> %s", *n_iters)
    return optim, other


def _apply_hyperparameters(optimizer, fresh, optim_changes, path):
    """Give the restored param groups the hyperparameters this config built the optimizer with."""
    for group, built in zip(optimizer.param_groups, fresh):
        for key in _APPLIED.values():
            if key in built and group.get(key) != built[key]:
                group[key] = built[key]
                if key == "amsgrad" and not built[key]:           # plain Adam from here on: drop the running max
                    for p in group["params"]:
                        optimizer.state.get(p, {}).pop("max_exp_avg_sq", None)
    name = type(optimizer).__name__
    for key, (old, new) in optim_changes.items():
        built = fresh[0].get(_APPLIED[key])
        if (built[0] if key == "beta1" and built is not None else built) == new:
            logging.info("optim.%s changed since %s: %s -> %s, applied to the restored %s optimizer", key, path,
                         describe(old), describe(new), name)
        else:
            logging.warning("optim.%s changed since %s (%s -> %s) but has no effect on %s", key, path,
                            describe(old), describe(new), name)


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)
