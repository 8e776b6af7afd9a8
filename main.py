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


def prepare_run(args, create=True):
    """Load and validate the config; create (or check) the run folders.  Returns the Config.

    Everything is validated before anything is created or deleted.  ``create=False`` (the ranks > 0 under torchrun,
    after rank 0 has prepared the run) only loads the config.  On ``--resume_training`` the run's config.yml is
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


DDP_RUNNERS = ("AnnealRunner", "BaselineRunner")


def env_world_size():
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(args, device):
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on CUDA, else gloo); returns this rank's
    device (cuda:LOCAL_RANK on CUDA).  Without torchrun: ``device`` unchanged."""
    if env_world_size() == 1:
        return device
    import torch
    import torch.distributed as dist

    from configs import UserError
    if args.test or args.runner not in DDP_RUNNERS:
        what = "--test" if args.test else args.runner
        raise UserError(f"{what} runs in a single process; start it without torchrun "
                        f"(multi-process training: {', '.join(DDP_RUNNERS)})")
    if not dist.is_available():
        raise UserError("torchrun started several processes, but this PyTorch has no torch.distributed")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def run(args):
    from configs import UserError
    from runners import RUNNERS
    if args.runner not in RUNNERS:
        raise UserError(f"unknown runner {args.runner!r}; choose one of {', '.join(RUNNERS)}")
    args.log = os.path.join(args.run, "logs", args.doc)
    args.tb = os.path.join(args.run, "tensorboard", args.doc)
    device = init_distributed(args, pick_device(args.device))
    try:
        return _prepare_and_run(args, device)
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _prepare_and_run(args, device):
    from runners.common import dist_max, is_main
    failure = None
    if is_main():                 # rank 0 alone checks, creates or deletes the run folders
        try:
            config = prepare_run(args)
        except BaseException as e:
            failure = e
    if dist_max(failure is not None):   # tells every rank whether rank 0 succeeded (and waits for its folders)
        if failure is None:
            return 1                    # rank 0 prints why
        raise failure
    if not is_main():
        config = prepare_run(args, create=False)
    if args.test or args.resume_training:
        return _run_runner(args, config, device)
    try:
        return _run_runner(args, config, device)
    except BaseException:
        if is_main():
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
    from runners.common import is_main, rank, seed_everything
    if is_main():
        setup_logging(args.level, None if args.test else os.path.join(args.log, "stdout.txt"))
    else:                       # the other ranks only report warnings and errors, on the terminal
        setup_logging(max(args.level, logging.WARNING))
    logging.info("writing log file to %s", args.log)
    logging.info("exp instance id = %d", os.getpid())
    if args.comment:
        logging.info("exp comment = %s", args.comment)
    logging.debug("config: %s", config)

    import torch
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
    from configs import UserError
    from runners.common import TrainingInterrupted
    rank = int(os.environ.get("RANK", "0")) if env_world_size() > 1 else 0
    prefix = f"[rank {rank}] " if rank else ""
    try:
        return run(args)
    except UserError as e:
        if level <= logging.DEBUG:
            traceback.print_exc()
        _log_to_file(logging.ERROR, f"error: {e}")
        print(f"{prefix}error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        _log_to_file(logging.WARNING, str(e))
        print(f"{prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
