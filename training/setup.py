"""Everything a training run is given: the typed :class:`TrainSetup` (network, optimizer, streams, writer, resumed
step), the official optimizers, and :func:`setup_training`, which builds it for an image runner."""
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.optim as optim

from compute.precision import maybe_compile, resolve_amp
from errors import ConfigError, UserError
from training.distributed import is_main, main_process_first, rank, world_size
from training.ema import EMA
from training.resume import find_resume_checkpoint, remove_stale_temp_files, restore_training_state
from training.rng import seed_everything
from training.tb_log import TensorboardLog


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """What :func:`training.loop.train_loop` trains with.  ``model`` may be wrapped (DDP); ``writer`` is a
    tensorboard writer or None (ranks > 0); ``start_step`` is 0 for a new run, the checkpoint's step on resume;
    ``ema`` (``model.ema``) is the moving average of the bare network's weights, updated after every step."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_stream: Any
    test_stream: Any
    config: Any
    log_dir: Path
    writer: Any
    device: torch.device
    start_step: int = 0
    scaler: Optional[torch.amp.GradScaler] = None
    amp: str = "none"           # training.amp resolved for this device ('auto' -> 'bf16' or 'none')
    ema: Optional[EMA] = None


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


def setup_training(ctx, config, device, model, datasets=None):
    """Data streams, optimizer, tensorboard writer and (with ``--resume_training``) the restored state of the run
    ``ctx`` (commands.context.RunContext): a TrainSetup.

    ``datasets`` = (train, test) overrides ``get_dataset`` (tests pass their own).
    """

    from datasets import BatchStream, get_dataset
    t = config.training
    n_proc, me = world_size(), rank()
    if t.batch_size % n_proc:
        raise ConfigError(f"training.batch_size ({t.batch_size}) must be divisible by the number of processes "
                          f"({n_proc}): each process takes an equal share of every batch")
    if datasets is None:        # under torchrun rank 0 alone may download it; the others then read its files
        datasets = main_process_first(lambda main: get_dataset(config.data, ctx.run))
        if datasets is None:
            raise UserError("rank 0 could not load the data set (it reports why)")
    train, test = datasets
    pin = device.type == "cuda"
    shard = dict(rank=me, world_size=n_proc, num_workers=t.num_workers, pin_memory=pin)
    train_stream = BatchStream(train, t.batch_size, seed=ctx.seed, **shard)
    test_stream = BatchStream(test, min(t.batch_size, len(test)), seed=ctx.seed + 1, drop_last=True, **shard)
    model = model.to(device)
    optimizer = make_optimizer(model.parameters(), config.optim)
    amp = resolve_amp(t.amp, device, config.data.image_size)
    logging.info("training precision: %s%s; compute: %s", amp, " (training.amp: auto)" if t.amp == "auto" else "",
                 ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(config.compute).items()))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    ema = EMA(model, config.model.ema_rate) if config.model.ema else None
    if ema is not None:
        logging.info("keeping an exponential moving average of the weights (model.ema_rate %g)", ema.rate)
    start_step = 0
    if ctx.resume_training:
        log = Path(ctx.log)
        if is_main():           # the one process that writes checkpoints: it must be able to, before training again
            remove_stale_temp_files(log)
            check_writable(log, "the run folder")
        # loaded onto the CPU, whatever the training device: the random-number states must be CPU tensors, and
        # load_state_dict copies the weights and the optimizer's state onto the device of the parameters
        path, state = find_resume_checkpoint(log)
        start_step = restore_training_state(state, model=model, optimizer=optimizer, path=path,
                                            streams={"train": train_stream, "test": test_stream}, scaler=scaler,
                                            config=config, ema=ema)
        logging.info("resuming from %s at step %d", path, start_step)
        if me:      # the checkpoint holds rank 0's random state: the other ranks draw their own noise again
            seed_everything(ctx.seed + me + 1_000_003 * start_step)
    if n_proc > 1:  # after loading the weights: DDP copies rank 0's into every process, then averages gradients
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    model = maybe_compile(model, config.compute, cache_root=Path(ctx.run) / "cache")
    writer = None
    if is_main():
        writer = TensorboardLog(ctx.tb, purge_step=start_step + 1 if start_step else None)
    return TrainSetup(model=model, optimizer=optimizer, train_stream=train_stream, test_stream=test_stream,
                      config=config, log_dir=Path(ctx.log), writer=writer, device=device, start_step=start_step,
                      scaler=scaler, amp=amp, ema=ema)


def check_writable(folder, what):
    """A UserError if no file can be created in ``folder`` (read-only, no permission, missing)."""
    folder = Path(folder)
    probe = folder / f".checkpoint.probe.tmp{os.getpid()}"     # the pattern remove_stale_temp_files cleans up
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot resume: {what} {folder} is not writable ({e.strerror or e}); checkpoints could not "
                        f"be saved") from e
