"""Command-line entry point: ``python main.py --runner AnnealRunner --config anneal.yml --doc mnist [--test]``.

Flags and defaults are the official ones, plus ``--overwrite`` and ``--device``.  A user mistake prints one line
``error: ...`` and exits 1 (the traceback only with ``--verbose debug``); nothing is deleted without ``--overwrite``.
"""
import argparse
import logging
import os
import sys
import traceback

from compute.precision import unusable_inductor_cache

INDUCTOR_CACHE_ERROR = unusable_inductor_cache()    # before the imports below import torchvision (and torch._dynamo)
if INDUCTOR_CACHE_ERROR:
    os.environ.pop("TORCHINDUCTOR_CACHE_DIR")       # so that they import; main() reports the one line

import torch  # noqa: E402

from commands import flow
from commands.context import RunContext
from commands.rundirs import prepare_run, settle_new_run
from errors import TrainingInterrupted, UserError
from reports.outputs import log_to_file, setup_logging
from runners import RUNNERS, torchrun_refusal
from training.distributed import (
    close_distributed,
    env_rank,
    init_distributed,
    is_main,
    main_process_first,
    pick_device,
    rank,
)
from training.rng import seed_everything
from training.signals import stop_with_message


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Noise Conditional Score Networks (Song & Ermon, NeurIPS 2019)")
    p.add_argument("--runner", type=str, default="AnnealRunner",
                   help=f"one of {', '.join(RUNNERS)}")
    p.add_argument("--config", type=str, default=None,
                   help="a file in configs/ or a path (default anneal.yml; with --resume_training: laid over the run's own; "
                        "with --test/--eval/--compare: only its sampling, eval and compute sections and data.root, over the run's)")
    p.add_argument("--seed", type=int, default=1234, help="random seed")
    p.add_argument("--run", type=str, default="run", help="folder for logs, tensorboard and data sets")
    p.add_argument("--doc", type=str, default="0", help="name of the run: logs go to <run>/logs/<doc>")
    p.add_argument("--comment", type=str, default="", help="a comment, written to the log")
    p.add_argument("--verbose", type=str, default="info", help="logging level: debug, info, warning, error")
    p.add_argument("--test", action="store_true", help="sample from (test) the trained run instead of training")
    p.add_argument("--eval", action="store_true",
                   help="export eval.n_samples samples of the trained run into -o and score them (FID, KID)")
    p.add_argument("--compare", action="store_true",
                   help="test-set loss of every checkpoint_<step>.pth of the run on fixed noise, per noise level")
    p.add_argument("--resume_training", action="store_true", help="continue training from <run>/logs/<doc>")
    p.add_argument("-o", "--image_folder", type=str, default="images", help="where --test writes its outputs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run <doc> (logs and tensorboard) or a non-empty image folder")
    p.add_argument("--device", type=str, default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    return p.parse_args(argv)


def run(ctx):
    """Prepare the run folders, set up logging, seeds and the device, and hand over to the command's flow."""
    runner_class = RUNNERS[ctx.runner]
    device = init_distributed(pick_device(ctx.device), torchrun_refusal(ctx.runner, ctx.command))
    try:
        # rank 0 alone checks, creates or deletes the run folders; the other ranks then only load the config
        config = main_process_first(lambda main: prepare_run(ctx, runner_class, create=main))
        if config is None:
            return 1                    # rank 0 failed and prints why
        if not ctx.new_run:
            return _run_flow(ctx, runner_class, config, device)
        try:
            result = _run_flow(ctx, runner_class, config, device)
        except BaseException:
            if is_main():
                settle_new_run(ctx, failed=True)
            raise
        if is_main():
            settle_new_run(ctx, failed=False)
        return result
    finally:
        close_distributed()


def _run_flow(ctx, runner_class, config, device):
    if is_main():
        setup_logging(ctx.level, None if ctx.command != "train" else os.path.join(ctx.log, "stdout.txt"))
    else:                       # the other ranks only report warnings and errors, on the terminal
        setup_logging(max(ctx.level, logging.WARNING))
    logging.info("writing log file to %s", ctx.log)
    logging.info("exp instance id = %d", os.getpid())
    if ctx.comment:
        logging.info("exp comment = %s", ctx.comment)
    logging.debug("config: %s", config)

    torch.backends.cudnn.benchmark = True
    seed_everything(ctx.seed + rank())         # each rank draws its own noise; rank 0 as a single process
    logging.info("runner %s on %s", ctx.runner, device)
    runner = runner_class(ctx, config, device)
    flow(runner, ctx.command)(ctx, runner)
    return 0


def main(argv=None):
    args = parse_args(argv)
    level = getattr(logging, args.verbose.upper(), None)
    if not isinstance(level, int):
        print(f"error: unknown --verbose level {args.verbose!r}; use debug, info, warning or error", file=sys.stderr)
        return 2
    if INDUCTOR_CACHE_ERROR:
        print(f"error: {INDUCTOR_CACHE_ERROR}", file=sys.stderr)
        return 1
    setup_logging(level)
    prefix = ""
    try:
        prefix = f"[rank {env_rank()}] " if env_rank() else ""
        with stop_with_message():
            return run(RunContext.from_flags(args, level, RUNNERS))
    except UserError as e:
        if level <= logging.DEBUG:
            traceback.print_exc()
        log_to_file(logging.ERROR, f"error: {e}")
        print(f"{prefix}error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        log_to_file(logging.WARNING, str(e))
        print(f"{prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
