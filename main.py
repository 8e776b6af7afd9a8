"""Command-line entry point: ``python main.py --runner AnnealRunner --config anneal.yml --doc mnist [--test]``.

Flags and defaults are the official ones, plus ``--overwrite`` and ``--device``.  A user mistake prints one line
``error: ...`` and exits 1 (the traceback only with ``--verbose debug``); nothing is deleted without ``--overwrite``.
"""
import argparse
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

import torch

from configs import dump_config, load_config, resolve_config_path
from errors import ConfigError, TrainingInterrupted, UserError
from runners import RUNNERS, torchrun_refusal
from runners.outputs import log_to_file, setup_logging
from training.distributed import (close_distributed, env_rank, init_distributed, is_main, main_process_first,
                                  pick_device, rank)
from training.rng import seed_everything


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Noise Conditional Score Networks (Song & Ermon, NeurIPS 2019)")
    p.add_argument("--runner", type=str, default="AnnealRunner",
                   help=f"one of {', '.join(RUNNERS)}")
    p.add_argument("--config", type=str, default=None,
                   help="a file in configs/ or a path (default anneal.yml; with --resume_training: the run's own)")
    p.add_argument("--seed", type=int, default=1234, help="random seed")
    p.add_argument("--run", type=str, default="run", help="folder for logs, tensorboard and data sets")
    p.add_argument("--doc", type=str, default="0", help="name of the run: logs go to <run>/logs/<doc>")
    p.add_argument("--comment", type=str, default="", help="a comment, written to the log")
    p.add_argument("--verbose", type=str, default="info", help="logging level: debug, info, warning, error")
    p.add_argument("--test", action="store_true", help="sample from (test) the trained run instead of training")
    p.add_argument("--resume_training", action="store_true", help="continue training from <run>/logs/<doc>")
    p.add_argument("-o", "--image_folder", type=str, default="images", help="where --test writes its outputs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run <doc> (logs and tensorboard) or a non-empty image folder")
    p.add_argument("--device", type=str, default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    return p.parse_args(argv)


def prepare_run(args, create=True):
    """Load and validate the config; create (or check) the run folders.  Returns the Config.

    Everything is validated before anything is created or deleted.  ``create=False`` (the ranks > 0 under torchrun,
    after rank 0 has prepared the run) only loads the config.  On ``--resume_training`` the run's config.yml is
    left alone here: train_loop replaces it with each checkpoint it writes, so that it always describes checkpoint.pth.
    """
    def load(path):                 # the config, checked against the runner's network; errors name the file
        config = load_config(path)
        try:
            RUNNERS[args.runner].check_config(config)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        return config

    log, tb = Path(args.log), Path(args.tb)
    if args.test:
        saved = log / "config.yml"
        if not saved.is_file():
            raise UserError(f"no trained run at {log} (missing config.yml); train it first with --doc {args.doc}")
        return load(saved)

    if args.resume_training:
        if not (log / "checkpoint.pth").is_file():
            raise UserError(f"cannot resume: no checkpoint at {log / 'checkpoint.pth'}")
        return load(resolve_config_path(args.config) if args.config else log / "config.yml")

    config = load(resolve_config_path(args.config or "anneal.yml"))
    if not create:
        return config
    existing = [p for p in (log, tb) if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"run '{args.doc}' already exists ({existing[0]}); use --resume_training to continue "
                        f"it, another --doc, or --overwrite to replace it")
    try:
        for p in existing:
            shutil.rmtree(p)
    except OSError as e:
        raise UserError(f"--overwrite: cannot remove {e.filename or existing[0]}: {e.strerror or e}") from e
    try:
        log.mkdir(parents=True, exist_ok=True)
        dump_config(config, log / "config.yml")
    except OSError as e:
        if log.is_dir() and not any(log.iterdir()):
            log.rmdir()                             # leave no empty run folder that would block the next attempt
        raise UserError(f"cannot write the run folder {log}: {e.strerror or e}") from e
    return config


def run(args):
    if args.runner not in RUNNERS:
        raise UserError(f"unknown runner {args.runner!r}; choose one of {', '.join(RUNNERS)}")
    args.log = os.path.join(args.run, "logs", args.doc)
    args.tb = os.path.join(args.run, "tensorboard", args.doc)
    device = init_distributed(pick_device(args.device), torchrun_refusal(args.runner, args.test))
    try:
        # rank 0 alone checks, creates or deletes the run folders; the other ranks then only load the config
        config = main_process_first(lambda main: prepare_run(args, create=main))
        if config is None:
            return 1                    # rank 0 failed and prints why
        if args.test or args.resume_training:
            return _run_runner(args, config, device)
        try:
            return _run_runner(args, config, device)
        except BaseException:
            if is_main():
                _remove_if_no_checkpoint(args)
            raise
    finally:
        close_distributed()


def _remove_if_no_checkpoint(args):
    """A new run that failed before its first checkpoint leaves nothing behind (the folders are this invocation's
    own: prepare_run refuses existing ones without --overwrite), so that the corrected command can simply run again."""
    log = Path(args.log)
    if any(log.glob("checkpoint*.pth")):
        return
    setup_logging(args.level)                         # close stdout.txt before removing its folder
    for p in (log, Path(args.tb)):
        if p.is_dir():
            shutil.rmtree(p)


def _run_runner(args, config, device):
    if is_main():
        setup_logging(args.level, None if args.test else os.path.join(args.log, "stdout.txt"))
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
    if args.test:
        runner.test()
    else:
        runner.train()
    return 0


def main(argv=None):
    args = parse_args(argv)
    level = getattr(logging, args.verbose.upper(), None)
    if not isinstance(level, int):
        print(f"error: unknown --verbose level {args.verbose!r}; use debug, info, warning or error", file=sys.stderr)
        return 2
    args.level = level
    setup_logging(level)
    prefix = f"[rank {env_rank()}] " if env_rank() else ""
    try:
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
