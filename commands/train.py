"""``main.py`` (training, new or resumed): the runner's network and objective through the one training loop."""
import dataclasses
from pathlib import Path

from errors import UserError
from reports.outputs import LOSS_LOG, LossLog
from training.loop import train_loop
from training.setup import setup_training


def train(ctx, runner):
    """Train ``runner``'s network on its objective from ``ctx``'s run (checkpoints, logs and tensorboard there)."""
    objective = runner.objective()
    if objective is None:
        raise UserError(f"{ctx.runner} has no training objective")
    setup = setup_training(ctx, runner.config, runner.device, runner.new_model(training=True))
    if runner.loss_log:                 # losses.csv beside tensorboard (Figure 1 is drawn from it)
        setup = dataclasses.replace(setup, writer=LossLog(setup.writer, Path(ctx.log) / LOSS_LOG, setup.start_step))
    train_loop(setup, objective)        # closes the writer
