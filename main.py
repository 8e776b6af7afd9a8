"""Command-line entry point: ``python main.py --runner AnnealRunner --config anneal.yml --doc mnist [--test]``.

Flags and defaults are the official ones, plus ``--overwrite`` and ``--device``.  A user mistake prints one line
``error: ...`` and exits 1 (the traceback only with ``--verbose debug``); nothing is deleted without ``--overwrite``.
"""
import argparse
import logging
import os
import sys
import traceback

import torch

from errors import TrainingInterrupted, UserError
from runners import RUNNERS, torchrun_refusal
from runners.outputs import log_to_file, setup_logging
from runners.rundirs import command, prepare_run, settle_new_run
from training.distributed import (close_distributed, env_rank, init_distributed, is_main, main_process_first,
                                  pick_device, rank)
from training.rng import seed_everything
from training.signals import stop_with_message


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Noise Conditional Score Networks (Song & Ermon, NeurIPS 2019)")
    p.add_argument("--runner", type=str, default="AnnealRunner",
                   help=f"one of {', '.join(RUNNERS)}")
    p.add_argument("--config", type=str, default=None,
                   help="a file in configs/ or a path (default anneal.yml; with --resume_training: the run's own; "
                        "with --test/--eval/--compare: only its sampling, eval and compute sections, over the run's)")
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


SEED_MAX = 2 ** 32 - 1          # numpy's seed range; derived seeds (per rank, after a resume) wrap around


def check_flags(args):
    """Range and form checks of the flags, before anything else happens."""
    doc = args.doc
    if doc in ("", ".", "..") or "/" in doc or (os.altsep and os.altsep in doc) or \
            not doc.isprintable() or len(doc.encode("utf-8", "surrogateescape")) > 255:
        raise UserError(f"--doc must be one plain folder name (not empty, '.' or '..'; no '/', no control or "
                        f"unprintable characters, at most 255 bytes); got {doc[:40]!r}{'...' if len(doc) > 40 else ''}")
    if not 0 <= args.seed <= SEED_MAX:
        raise UserError(f"--seed must be in [0, {SEED_MAX}], got {str(args.seed)[:40]}")
    if args.test + args.eval + args.compare + args.resume_training > 1:
        raise UserError("--test, --eval, --compare and --resume_training exclude each other")


def run(args):
    if args.runner not in RUNNERS:
        raise UserError(f"unknown runner {args.runner[:40]!r}; choose one of {', '.join(RUNNERS)}")
    check_flags(args)
    args.log = os.path.join(args.run, "logs", args.doc)
    args.tb = os.path.join(args.run, "tensorboard", args.doc)
    device = init_distributed(pick_device(args.device), torchrun_refusal(args.runner, command(args)))
    try:
        # rank 0 alone checks, creates or deletes the run folders; the other ranks then only load the config
        config = main_process_first(lambda main: prepare_run(args, create=main))
        if config is None:
            return 1                    # rank 0 failed and prints why
        if command(args) != "train" or args.resume_training:
            return _run_runner(args, config, device)
        try:
            result = _run_runner(args, config, device)
        except BaseException:
            if is_main():
                settle_new_run(args, failed=True)
            raise
        if is_main():
            settle_new_run(args, failed=False)
        return result
    finally:
        close_distributed()


def _run_runner(args, config, device):
    if is_main():
        setup_logging(args.level, None if command(args) != "train" else os.path.join(args.log, "stdout.txt"))
    else:                       # the other ranks only report warnings and errors, on the terminal
        setup_logging(max(args.level, logging.WARNING))
    logging.info("writing log file to %s", args.log)
    logging.info("exp instance id = %d", os.getpid())
    if args.comment:
        logging.info("exp comment = %s", args.comment)
    logging.debug("config: %s", config)

    torch.backends.cudnn.benchmark = True
    seed_everything(args.seed + rank())        # each rank draws its own noise; rank 0 as a single process
    logging.info("runner %s on %s", args.runner, device)
    runner = RUNNERS[args.runner](args, config, device)
    getattr(runner, {"train": "train", "test": "test", "eval": "evaluate", "compare": "compare"}[command(args)])()
    return 0


def main(argv=None):
    args = parse_args(argv)
    level = getattr(logging, args.verbose.upper(), None)
    if not isinstance(level, int):
        print(f"error: unknown --verbose level {args.verbose!r}; use debug, info, warning or error", file=sys.stderr)
        return 2
    args.level = level
    setup_logging(level)
    prefix = ""
    try:
        prefix = f"[rank {env_rank()}] " if env_rank() else ""
        with stop_with_message():
            return run(args)
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
