"""Resuming a run: which checkpoint to continue from (``checkpoint.pth`` or the newest complete snapshot), stale
temporary files, and restoring the training state, applying the settings that changed since (or refusing them)."""
import logging
import math
from pathlib import Path

import torch

import atomic
from configs import config_to_dict
from errors import UserError, describe
from training.checkpoint import load_checkpoint, load_model_state, snapshot_step
from training.checkpoint_checks import HYPERPARAMETERS, check_training_state, is_int, nested_get
from training.rng import set_rng_state


def find_resume_checkpoint(log_dir, map_location="cpu"):
    """The checkpoint a resumed run continues from, loaded: ``(path, state)``.

    ``checkpoint.pth`` if it loads, unless a loadable ``checkpoint_{step}.pth`` is newer (a save interrupted between
    the two files); else the newest loadable ``checkpoint_{step}.pth`` (by step).  Files that do not load (truncated
    by a crash) are skipped with a warning.  None loadable: a UserError ``cannot resume: ...``.
    """
    log_dir = Path(log_dir)
    main = log_dir / "checkpoint.pth"
    snapshots = sorted(((step, p) for p in log_dir.glob("checkpoint_*.pth")
                        if (step := snapshot_step(p)) is not None and p.is_file()), key=lambda x: x[0], reverse=True)
    errors, best, floor = [], None, -1
    if main.is_file():
        try:
            best = (main, load_checkpoint(main, map_location))
            step = best[1].get("step")
            # a step that is no valid int (reported by restore_training_state) or unknown (official): keep this file
            floor = step if is_int(step) and step >= 0 else math.inf
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
    """Remove the ``.checkpoint*.tmp<pid>`` files of :func:`atomic_write` whose process is dead; return their paths
    (:func:`atomic.remove_stale_temp_files`)."""
    return atomic.remove_stale_temp_files(log_dir, "checkpoint*")


def restore_training_state(state, *, model, optimizer, path, streams=None, scaler=None, config=None, ema=None):
    """Load weights, optimizer, random states, stream positions and (``ema``, a :class:`training.ema.EMA`) the moving
    average of the weights; return the step to continue from.  A checkpoint without EMA weights (trained without
    ``model.ema``, or official) starts the average from the restored weights, with one warning.

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
        # implementation flags (foreach, fused, capturable, maximize, ...) belong to the running torch's optimizer, not to the file
        saved["param_groups"] = [{**g, **{k: v for k, v in built.items() if k not in HYPERPARAMETERS}}
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
    _restore_ema(ema, state, model, path, {k: other_changes.pop(k) for k in ("model.ema", "model.ema_rate")
                                            if k in other_changes})
    if other_changes:
        logging.warning("settings changed since %s take effect from this resume: %s", path,
                        ", ".join(f"{k} {describe(a)} -> {describe(b)}" for k, (a, b) in other_changes.items()))
    if state.get("step") is None:
        logging.warning("%s is an official-format checkpoint without a step; counting steps from 0", path)
        return 0
    return int(state["step"])


def _restore_ema(ema, state, model, path, changes):
    """The EMA continues from the checkpoint's, starts from the restored weights, or (model.ema now off) ends; one
    warning for the last two, and for a changed model.ema_rate of a continued EMA."""
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
        if "model.ema_rate" in changes:
            logging.warning("model.ema_rate changed since %s (%s -> %s): the moving average continues at the new "
                            "rate", path, *map(describe, changes["model.ema_rate"]))
    elif ema is not None:
        ema.reset(model)
        logging.warning("%s holds no EMA weights (%s): the moving average (model.ema_rate %g) starts from the restored "
                        "weights", path, "model.ema was off" if "model.ema" in changes else "trained without model.ema",
                        ema.rate)
    elif state.get("ema") is not None:
        logging.warning("model.ema is off: the EMA weights of %s are not continued, and the checkpoints from now on "
                        "hold the raw weights only", path)


def _stream_position(name, saved, stream, saved_config, path):
    """A BatchStream's saved position, converted to this stream's batch size if training.batch_size changed (the
    epoch order does not depend on it: the examples already seen this epoch are skipped).  Raises UserError for a
    position beyond the epoch."""
    saved = dict(saved)
    if not hasattr(stream, "batches_per_epoch"):
        return saved
    n = len(stream.dataset)
    old = nested_get(saved_config, "training", "batch_size")
    old = min(old, n) if is_int(old) and old > 0 else None
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
