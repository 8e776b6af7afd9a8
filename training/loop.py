"""The one training loop: an :class:`Objective` (what to minimise) run on a :class:`training.setup.TrainSetup`
(what to train it with).  The step itself is :func:`forward_loss` and :func:`update` (= :func:`backward`, then
:func:`optimizer_step`), which the benchmark calls too, so that a speed option is wired once.

Host synchronisation.  A training step waits for the device once: the loss value is read after the backward pass
has been queued (so the device is busy meanwhile), and under torchrun that one read also carries the stop signal
(:func:`training.distributed.mean_and_max`: one collective per step).  The optimizer step waits for that value, so
a non-finite loss still stops before the weights change."""
import logging
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from compute.precision import autocast_context, nonfinite_parameters, unwrap
from configs import dump_config
from errors import NonFiniteLoss, TrainingInterrupted, UserError
from training.checkpoint import save_checkpoint
from training.distributed import barrier, dist_mean, is_main, mean_and_max, world_size
from training.signals import stop_on_signals


@dataclass(frozen=True)
class Objective:
    """What a runner trains.

    loss_fn(model, x) -> (per_example_loss (N,), labels (N,) or None): the per-example form of a losses/ objective;
    the training loss is its mean.  test_fn(model, x) -> number, evaluated every ``training.test_freq`` steps on a
    test batch and logged as ``test_name``.  ``sigmas`` (L,) names the noise levels in non-finite reports and goes
    into checkpoints.  ``extra_scalars`` are logged to tensorboard at every step.  ``preview(model, step, writer)``
    (optional) shows progress every ``training.preview_freq`` steps in the main process (with the EMA weights when
    the setup has an EMA); it runs on its own random numbers, so a run with previews trains exactly as one without.
    """
    loss_fn: Callable
    test_fn: Optional[Callable] = None
    test_name: str = "test_dsm_loss"
    sigmas: Optional[torch.Tensor] = None
    extra_scalars: dict = field(default_factory=dict)
    preview: Optional[Callable] = None


def forward_loss(model, loss_fn, X, amp="none"):
    """The training loss of batch X (under autocast when ``amp`` asks): (mean loss, per-example losses, labels)."""
    with autocast_context(X.device, amp):
        per_example, labels = loss_fn(model, X)
    return per_example.float().mean(), per_example, labels


def backward(optimizer, loss, scaler=None):
    """Clear the gradients and back-propagate ``loss`` (scaled by the fp16 GradScaler when it is enabled)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
    else:
        loss.backward()


def optimizer_step(optimizer, scaler=None):
    """Take one optimizer step with the gradients of :func:`backward` (through the fp16 GradScaler when enabled)."""
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def update(optimizer, loss, scaler=None):
    """Back-propagate ``loss`` and take one optimizer step (through the fp16 GradScaler when it is enabled)."""
    backward(optimizer, loss, scaler)
    optimizer_step(optimizer, scaler)


def train_loop(setup, objective):
    """Train ``setup.model`` on ``objective`` from ``setup.start_step`` to ``training.n_iters``; returns the last step.
    The tensorboard writer ``setup.writer`` is closed at the end, whatever happens.

    Checkpoints ``checkpoint_{step}.pth`` and ``checkpoint.pth`` every ``snapshot_freq`` steps and at the end.
    Steps are numbered from 1; training stops after step ``n_iters`` (or after ``n_epochs`` epochs).
    Under torchrun every process runs this loop on its share of each batch; the loss, test loss and stop signals
    are combined over processes so that all take the same decisions; only rank 0 logs and writes checkpoints.
    """
    s, tcfg = setup, setup.config.training
    model, writer, device = s.model, s.writer, s.device
    log_dir = Path(s.log_dir)
    streams = {"train": s.train_stream}
    if s.test_stream is not None:
        streams["test"] = s.test_stream
    last_saved = s.start_step

    def save(step):
        bad = nonfinite_parameters(model)
        if bad:     # never replace a good checkpoint with a broken one
            raise NonFiniteLoss(f"non-finite parameters ({', '.join(bad[:3])}) after step {step}; not saved; "
                                f"{_kept(log_dir, last_saved)}")
        if is_main():                                   # one writer; the weights are the same in every process
            paths = [log_dir / "checkpoint.pth"]
            if tcfg.keep_snapshots:
                paths.insert(0, log_dir / f"checkpoint_{step}.pth")
            save_checkpoint(paths, model=model, optimizer=s.optimizer, step=step, sigmas=objective.sigmas,
                            config=s.config, streams=streams, scaler=s.scaler, ema=s.ema)
            dump_config(s.config, log_dir / "config.yml")  # the run's config.yml always describes its checkpoint
        barrier()

    step = s.start_step
    if step >= tcfg.n_iters:
        logging.warning("the checkpoint is at step %d and training.n_iters is %d: nothing to train; pass a config "
                        "with a larger n_iters (--config) to continue", step, tcfg.n_iters)
    bar = tqdm(total=tcfg.n_iters, initial=s.start_step, desc="train", unit="step", dynamic_ncols=True,
               mininterval=1.0, disable=not is_main())
    model.train()
    try:
        with stop_on_signals() as flag:
            while step < tcfg.n_iters and s.train_stream.epoch < tcfg.n_epochs:
                X, _ = next(s.train_stream)
                step += 1
                X = X.to(device, non_blocking=True)
                loss, per_example, labels = forward_loss(model, objective.loss_fn, X, s.amp)
                backward(s.optimizer, loss, s.scaler)   # queued before the host waits for the loss value
                # the one host wait of the step; every process decides on the same (mean) value, and learns whether
                # any process was signalled (under torchrun: one collective for both)
                loss_value, signalled = mean_and_max(loss, flag["signum"] or 0)
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(_non_finite_message(per_example, labels, objective.sigmas, step, last_saved,
                                                            log_dir))
                optimizer_step(s.optimizer, s.scaler)
                if s.ema is not None:
                    s.ema.update(model)

                if writer is not None:
                    writer.add_scalar("loss", loss_value, global_step=step)
                    for name, value in objective.extra_scalars.items():
                        writer.add_scalar(name, value, global_step=step)
                if step % tcfg.log_freq == 0:
                    logging.info("step: %d, loss: %r", step, loss_value)       # full precision, as official
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)

                if objective.test_fn is not None and step % tcfg.test_freq == 0:
                    test_X, _ = next(s.test_stream)
                    model.eval()
                    with autocast_context(device, s.amp):
                        test_value = dist_mean(float(objective.test_fn(unwrap(model), test_X.to(device))))
                    model.train()
                    if writer is not None:
                        writer.add_scalar(objective.test_name, test_value, global_step=step)
                    logging.info("step: %d, %s: %r", step, objective.test_name, test_value)

                if objective.preview is not None and tcfg.preview_freq and step % tcfg.preview_freq == 0 \
                        and is_main():
                    _preview(objective.preview, model if s.ema is None else s.ema.network(model), step, writer)
                if step % tcfg.snapshot_freq == 0:
                    save(step)
                    last_saved = step
                # a signal to any process stops them all (one process: also a signal that came since the loss)
                signum = int(signalled) if world_size() > 1 else flag["signum"] or 0
                if signum:
                    if last_saved != step:
                        save(step)
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved to "
                        f"{log_dir / 'checkpoint.pth'}; continue with --resume_training", 128 + signum)
            if last_saved != step:
                save(step)
    except BaseException:
        bar.close()
        _close_writer(writer, failing=True)     # the error that stopped training stays the one reported
        raise
    bar.close()
    _close_writer(writer, failing=False)
    logging.info("finished at step %d; checkpoint: %s", step, log_dir / "checkpoint.pth")
    return step


def _preview(preview, model, step, writer):
    """Run ``preview`` in eval mode on a fork of the random generators (the training's draws stay untouched)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(step)
        model.eval()
        try:
            with torch.no_grad():
                preview(unwrap(model), step, writer)
        finally:
            model.train()


def _close_writer(writer, failing):
    """Flush and close the tensorboard writer (so that no flush is left for interpreter exit).  A full or vanished
    disk is a warning while another error is being reported, and one clear error otherwise."""
    if writer is None:
        return
    try:
        writer.close()
    except (OSError, UserError) as e:   # OSError: a plain SummaryWriter; UserError: training.tb_log.TensorboardLog
        message = str(e) if isinstance(e, UserError) else f"could not write the tensorboard log: {e.strerror or e}"
        if not failing:
            raise UserError(message) from e
        logging.warning(message)


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
