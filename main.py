"""Command-line entry point: ``python main.py --runner AnnealRunner --config anneal.yml --doc mnist [--test]``.

Flags and defaults are the official ones, plus ``--overwrite`` and ``--device``.  A user mistake prints one line
``error: ...`` and exits 1 (the traceback only with ``--verbose debug``); nothing is deleted without ``--overwrite``.
"""
import argparse
import logging
import os
import random
import shutil
import sys
import traceback
from pathlib import Path

LOG_FORMAT = "%(levelname)s - %(filename)s - %(asctime)s - %(message)s"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Noise Conditional Score Networks (Song & Ermon, NeurIPS 2019)")
    p.add_argument("--runner", type=str, default="AnnealRunner",
                   help="AnnealRunner, BaselineRunner, ScoreNetRunner or ToyRunner")
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


class _TqdmHandler(logging.StreamHandler):
    """Log lines printed through tqdm so that they do not break progress bars."""

    def emit(self, record):
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:       # logging's own contract: report handler errors, never raise
            self.handleError(record)


def setup_logging(level, log_file=None):
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handlers = [_TqdmHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(h)
    root.setLevel(level)


def _log_to_file(level, message):
    """Record why the run stopped at the end of its stdout.txt (the terminal gets the message as one plain line)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(logging.LogRecord("main", level, __file__, 0, message, None, None))


def prepare_run(args):
    """Load and validate the config; create (or check) the run folders.  Returns the Config.

    Everything is validated before anything is created or deleted.  On ``--resume_training`` the run's config.yml is
    left alone here: train_loop replaces it with each checkpoint it writes, so that it always describes checkpoint.pth.
    """
    from configs import ConfigError, UserError, dump_config, load_config, resolve_config_path
    from configs.schema import check_for_runner

    def load(path):                 # the config, checked against the runner's network; errors name the file
        config = load_config(path)
        try:
            check_for_runner(config, args.runner)
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


def pick_device(name):
    import torch

    from configs import UserError
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available")
    return device


def seed_everything(seed):
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def run(args):
    from configs import UserError
    from runners import RUNNERS
    if args.runner not in RUNNERS:
        raise UserError(f"unknown runner {args.runner!r}; choose one of {', '.join(RUNNERS)}")
    args.log = os.path.join(args.run, "logs", args.doc)
    args.tb = os.path.join(args.run, "tensorboard", args.doc)
    device = pick_device(args.device)
    config = prepare_run(args)
    if args.test or args.resume_training:
        return _run_runner(args, config, device)
    try:
        return _run_runner(args, config, device)
    except BaseException:
        _remove_if_no_checkpoint(args)
        raise


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
    from runners import RUNNERS
    setup_logging(args.level, None if args.test else os.path.join(args.log, "stdout.txt"))
    logging.info("writing log file to %s", args.log)
    logging.info("exp instance id = %d", os.getpid())
    if args.comment:
        logging.info("exp comment = %s", args.comment)
    logging.debug("config: %s", config)

    import torch
    torch.backends.cudnn.benchmark = True
    seed_everything(args.seed)
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
    from configs import UserError
    from runners.common import TrainingInterrupted
    try:
        return run(args)
    except UserError as e:
        if level <= logging.DEBUG:
            traceback.print_exc()
        _log_to_file(logging.ERROR, f"error: {e}")
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        _log_to_file(logging.WARNING, str(e))
        print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
