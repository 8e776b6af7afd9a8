"""What the runners share: optimizer, checkpoints, the one training loop, and image/GIF writers.

Only runners and main.py touch disk, logging or devices; models/ and losses/ stay pure.
"""
import io
import logging
import math
import os
import random
import re
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.optim as optim
from tqdm import tqdm

from configs import ConfigError, UserError, config_to_dict, dump_config

CHECKPOINT_VERSION = 2


class NonFiniteLoss(UserError):
    pass


class TrainingInterrupted(Exception):
    """Raised after a clean stop on SIGINT/SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------------------------- optimizer

def make_optimizer(params, optim_cfg):
    """The official ``get_optimizer``: Adam (beta2 0.999), RMSprop or SGD (momentum 0.9)."""
    if optim_cfg.optimizer == "Adam":
        return optim.Adam(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay,
                          betas=(optim_cfg.beta1, 0.999), amsgrad=optim_cfg.amsgrad)
    if optim_cfg.optimizer == "RMSProp":
        return optim.RMSprop(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    if optim_cfg.optimizer == "SGD":
        return optim.SGD(params, lr=optim_cfg.lr, momentum=0.9)
    raise UserError(f"optimizer {optim_cfg.optimizer} not understood")


def unwrap(model):
    """The bare network inside DistributedDataParallel / DataParallel, whose state-dict keys have no prefix."""
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------- multi-process (torchrun, DDP)

def world_size():
    """The number of training processes: > 1 only under torchrun, after main.py initialised torch.distributed."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return torch.distributed.get_rank() if world_size() > 1 else 0


def is_main():
    """True in the process that logs and writes files (rank 0; the only process without torchrun)."""
    return rank() == 0


def _all_reduce(value, op):
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.item()


def dist_mean(value):
    """The mean of a number over all processes (the number itself in a single process)."""
    return value if world_size() == 1 else _all_reduce(value, torch.distributed.ReduceOp.SUM) / world_size()


def dist_max(value):
    """The largest value of a number over all processes (the number itself in a single process)."""
    return value if world_size() == 1 else _all_reduce(value, torch.distributed.ReduceOp.MAX)


def barrier():
    if world_size() > 1:
        torch.distributed.barrier()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------------------------- checkpoints

def _rng_state():
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _atomic_write(path, data):
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
    """Serialise the full training state once and write it atomically to every path in ``paths``."""
    state = {"version": CHECKPOINT_VERSION, "step": step, "model": unwrap(model).state_dict(),
             "optimizer": optimizer.state_dict(), "config": config_to_dict(config),
             "sigmas": None if sigmas is None else sigmas.detach().cpu(),
             "rng": _rng_state(),
             "streams": {k: _stream_state(s) for k, s in (streams or {}).items()}}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    for p in paths:
        _atomic_write(p, buf.getvalue())


def _stream_state(stream):
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
    state["model"] = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state["model"].items()}
    return state


def load_model_state(model, state, path):
    """Strictly load weights; an architecture or config mismatch is one clear error naming the file."""
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
    try:
        unwrap(model).load_state_dict(saved)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise UserError(f"checkpoint {path} does not fit the network of this config: {detail[:300]}") from e


def load_trained(model, path, device, eval_mode=True):
    """``model`` on ``device`` with the weights of the checkpoint at ``path`` (in eval mode); returns (model, state)."""
    state = load_checkpoint(path, map_location=device)
    model = model.to(device)
    load_model_state(model, state, path)
    return (model.eval() if eval_mode else model), state


def restore_training_state(state, *, model, optimizer, path, streams=None, scaler=None):
    """Load weights, optimizer, random states and stream positions; return the step to continue from."""
    load_model_state(model, state, path)
    if state.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(f"optimizer state in {path} does not fit this config's optimizer: {e}") from e
    if state.get("rng") is not None:
        _set_rng_state(state["rng"])
    for k, s in (streams or {}).items():
        if k in state.get("streams", {}):
            saved = state["streams"][k]
            if saved.get("seed") is not None and saved["seed"] != getattr(s, "seed", None):
                # the data order belongs to the run, not to this invocation's --seed
                logging.warning("%s data order continues with the run's seed %d (not --seed's %d)", k,
                                saved["seed"], s.seed)
                s.seed = int(saved["seed"])
            s.load_state_dict(saved)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if state.get("step") is None:
        logging.warning("%s is an official-format checkpoint without a step; counting steps from 0", path)
        return 0
    return int(state["step"])


# ------------------------------------------------------------------------------------------ signal handling

@contextmanager
def stop_on_signals():
    """While active, SIGINT/SIGTERM set ``flag['signum']`` instead of killing the process; a 2nd SIGINT aborts."""
    flag = {"signum": None}

    def handler(signum, _frame):
        if flag["signum"] == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum
        again = " (Ctrl-C again: stop at once, without saving)" if signum == signal.SIGINT else ""
        tqdm.write(f"received {signal.Signals(signum).name}: finishing this step, then saving a checkpoint{again}",
                   file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------------- training loop

def autocast_context(device, amp):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_loop(*, model, loss_fn, optimizer, train_stream, config, log_dir, writer, device, sigmas=None,
               test_fn=None, test_stream=None, test_name="test_dsm_loss", extra_scalars=None, start_step=0,
               scaler=None):
    """The only training loop.

    loss_fn(model, x) -> (per_example_loss (N,), labels (N,) or None); the training loss is its mean.
    test_fn(model, x) -> scalar, evaluated every ``training.test_freq`` steps and logged as ``test_name``.
    Checkpoints ``checkpoint_{step}.pth`` and ``checkpoint.pth`` every ``snapshot_freq`` steps and at the end.
    Steps are numbered from 1; training stops after step ``n_iters`` (or after ``n_epochs`` epochs).
    Under torchrun every process runs this loop on its share of each batch; the loss, test loss and stop signals
    are combined over processes so that all take the same decisions; only rank 0 logs and writes checkpoints.
    """
    tcfg = config.training
    log_dir = Path(log_dir)
    streams = {"train": train_stream}
    if test_stream is not None:
        streams["test"] = test_stream
    last_saved = start_step

    def save(step):
        bad = [n for n, p in unwrap(model).named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:     # never replace a good checkpoint with a broken one
            raise NonFiniteLoss(f"non-finite parameters ({', '.join(bad[:3])}) after step {step}; not saved; "
                                f"{_kept(log_dir, last_saved)}")
        if is_main():                                   # one writer; the weights are the same in every process
            paths = [log_dir / "checkpoint.pth"]
            if tcfg.keep_snapshots:
                paths.insert(0, log_dir / f"checkpoint_{step}.pth")
            save_checkpoint(paths, model=model, optimizer=optimizer, step=step, sigmas=sigmas, config=config,
                            streams=streams, scaler=scaler)
            dump_config(config, log_dir / "config.yml")  # the run's config.yml always describes its checkpoint.pth
        barrier()

    step = start_step
    if step >= tcfg.n_iters:
        logging.warning("the checkpoint is at step %d and training.n_iters is %d: nothing to train; pass a config "
                        "with a larger n_iters (--config) to continue", step, tcfg.n_iters)
    bar = tqdm(total=tcfg.n_iters, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
               mininterval=1.0, disable=not is_main())
    model.train()
    try:
        with stop_on_signals() as flag:
            while step < tcfg.n_iters and train_stream.epoch < tcfg.n_epochs:
                X, _ = next(train_stream)
                step += 1
                X = X.to(device, non_blocking=True)
                with autocast_context(device, tcfg.amp):
                    per_example, labels = loss_fn(model, X)
                loss = per_example.float().mean()
                loss_value = dist_mean(loss.item())     # every process decides on the same (mean) value
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(_non_finite_message(per_example, labels, sigmas, step, last_saved,
                                                            log_dir))
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()

                if writer is not None:
                    writer.add_scalar("loss", loss_value, global_step=step)
                    for name, value in (extra_scalars or {}).items():
                        writer.add_scalar(name, value, global_step=step)
                if step % tcfg.log_freq == 0:
                    logging.info("step: %d, loss: %r", step, loss_value)       # full precision, as official
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)

                if test_fn is not None and step % tcfg.test_freq == 0:
                    test_X, _ = next(test_stream)
                    model.eval()
                    with autocast_context(device, tcfg.amp):
                        test_value = dist_mean(float(test_fn(unwrap(model), test_X.to(device))))
                    model.train()
                    if writer is not None:
                        writer.add_scalar(test_name, test_value, global_step=step)
                    logging.info("step: %d, %s: %r", step, test_name, test_value)

                if step % tcfg.snapshot_freq == 0:
                    save(step)
                    last_saved = step
                signum = int(dist_max(flag["signum"] or 0))     # a signal to any process stops them all
                if signum:
                    if last_saved != step:
                        save(step)
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved to "
                        f"{log_dir / 'checkpoint.pth'}; continue with --resume_training", 128 + signum)
            if last_saved != step:
                save(step)
    finally:
        bar.close()
        if writer is not None:
            writer.flush()
    logging.info("finished at step %d; checkpoint: %s", step, log_dir / "checkpoint.pth")
    return step


def _non_finite_message(per_example, labels, sigmas, step, last_saved, log_dir):
    bad = (~torch.isfinite(per_example.detach().float())).nonzero().flatten()
    where = ""
    if labels is not None and len(bad):
        levels = sorted({int(labels[i]) for i in bad.tolist()})
        if sigmas is not None:
            where = " at noise level(s) " + ", ".join(f"{c} (sigma={float(sigmas[c]):.4g})" for c in levels)
        else:
            where = f" at noise level(s) {levels}"
    return f"non-finite training loss at step {step}{where}; stopped before the update; {_kept(log_dir, last_saved)}"


def _kept(log_dir, last_saved):
    path = Path(log_dir) / "checkpoint.pth"
    if path.is_file():
        return f"the last good checkpoint {path} (step {last_saved}) is kept unchanged"
    return "no checkpoint was written"


# ------------------------------------------------------------------------------------------ images and GIFs

def to_grid(x, nrow):
    """(B, C, H, W) in [0, 1] -> one (3, H', W') grid; tiny images (< 32 px) are upscaled (nearest) for viewing."""
    from torchvision.utils import make_grid
    x = x.detach().float().cpu()
    scale = max(1, 32 // x.shape[-1])
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    return make_grid(x, nrow=nrow, padding=2)


def grid_image(x, nrow):
    from PIL import Image
    grid = to_grid(x, nrow)
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def save_grid(x, path, nrow):
    grid_image(x, nrow).save(path)


def save_gif(frames, path, duration=40):
    """Write PIL frames as a looping GIF."""
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration, loop=0)


def sample_to_folder(sampler, x, *, total, folder, data_cfg, sampling_cfg, nrow, desc, name="samples", grid=None):
    """Run ``sampler(x, callback) -> x`` (a models/langevin.py sampler) with a progress bar and write its outputs.

    x: (N, C, H, W) initial state; ``total`` is the number of sampler steps.  Writes into ``folder``:
    ``{name}.png`` (grid of the final samples), ``{name}.pth`` (the final samples, (N, C, H, W) in [0, 1]) and
    ``movie.gif`` (the chain, every ``sampling.gif_every``-th step); with ``sampling.save_all_frames`` also
    ``image_{i}.png`` / ``image_raw_{i}.pth`` for every step.  ``grid(samples) -> (images, nrow)`` changes what the PNG
    shows (inpainting).  Returns the final samples on the CPU.
    """
    from datasets import inverse_data_transform
    folder, smp = Path(folder), sampling_cfg
    frames = [grid_image(inverse_data_transform(x, data_cfg), nrow)]
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0)

    def callback(i, x_i):
        bar.update(1)
        if (i + 1) % smp.gif_every == 0 or i + 1 == total:
            frames.append(grid_image(inverse_data_transform(x_i, data_cfg), nrow))
        if smp.save_all_frames:
            img = inverse_data_transform(x_i, data_cfg).cpu()
            save_grid(img, folder / f"image_{i}.png", nrow)
            torch.save(img, folder / f"image_raw_{i}.pth")

    try:
        x = sampler(x, callback)
    finally:
        bar.close()
    samples = inverse_data_transform(x, data_cfg).cpu()                               # (N, C, H, W)
    images, grid_nrow = grid(samples) if grid is not None else (samples, nrow)
    save_grid(images, folder / f"{name}.png", grid_nrow)
    torch.save(samples, folder / f"{name}.pth")
    save_gif(frames, folder / "movie.gif")
    logging.info("wrote %s, %s and %s", folder / f"{name}.png", folder / f"{name}.pth", folder / "movie.gif")
    return samples


def prepare_output_folder(folder, overwrite):
    """Create the sample folder; refuse to write into a non-empty one unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"output folder {folder} is not empty; choose another with -o or pass --overwrite")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {folder}: {e.strerror or e}") from e
    return folder


# ------------------------------------------------------------------------------------------------ set-up

def setup_training(args, config, device, model, datasets=None):
    """Data streams, optimizer, tensorboard writer and (with ``--resume_training``) the restored state.

    Returns the keyword arguments of :func:`train_loop` other than the loss/test functions.
    ``datasets`` overrides ``get_dataset`` (ToyRunner and tests pass their own).
    """
    from tensorboardX import SummaryWriter

    from datasets import BatchStream, get_dataset
    t = config.training
    n_proc, me = world_size(), rank()
    if t.batch_size % n_proc:
        raise ConfigError(f"training.batch_size ({t.batch_size}) must be divisible by the number of processes "
                          f"({n_proc}): each process takes an equal share of every batch")
    train, test = datasets if datasets is not None else get_dataset(config.data, args.run)
    pin = device.type == "cuda"
    shard = dict(rank=me, world_size=n_proc, num_workers=t.num_workers, pin_memory=pin)
    train_stream = BatchStream(train, t.batch_size, seed=args.seed, **shard)
    test_stream = BatchStream(test, min(t.batch_size, len(test)), seed=args.seed + 1, drop_last=True, **shard)
    model = model.to(device)
    optimizer = make_optimizer(model.parameters(), config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    start_step = 0
    if args.resume_training:
        path = Path(args.log) / "checkpoint.pth"
        state = load_checkpoint(path, map_location=device)
        start_step = restore_training_state(state, model=model, optimizer=optimizer, path=path,
                                            streams={"train": train_stream, "test": test_stream}, scaler=scaler)
        logging.info("resuming from %s at step %d", path, start_step)
        if me:      # the checkpoint holds rank 0's random state: the other ranks draw their own noise again
            seed_everything(args.seed + me + 1_000_003 * start_step)
    if n_proc > 1:  # after loading the weights: DDP copies rank 0's into every process, then averages gradients
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    writer = SummaryWriter(args.tb, purge_step=start_step + 1 if start_step else None) if is_main() else None
    return dict(model=model, optimizer=optimizer, train_stream=train_stream, test_stream=test_stream,
                config=config, log_dir=args.log, writer=writer, device=device, start_step=start_step, scaler=scaler)
