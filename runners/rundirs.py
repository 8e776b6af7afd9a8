"""A run's folders: ``<run>/logs/<doc>`` (config.yml, stdout.txt, checkpoints) and ``<run>/tensorboard/<doc>``.

The config is loaded and checked against the runner before any folder is touched.  A new run refuses an existing
one unless ``--overwrite``; then the old run is moved aside (``.<doc>.replaced-<pid>``) and deleted only once the new
run has written a checkpoint (or finished); a new run that fails before its first checkpoint is removed and the old
one comes back.  A linked run folder is replaced as a link: what it points to is never deleted.
"""
import os
import shutil
from pathlib import Path

from configs import check_training, dump_config, load_config, overlay_config, resolve_config_path
from errors import ConfigError, UserError
from runners import RUNNERS
from runners.outputs import setup_logging
from training.resume import resume_checkpoint_path


def command(args):
    """What this invocation does: train (new or resumed), or test / eval / compare a trained run."""
    return "test" if args.test else "eval" if args.eval else "compare" if getattr(args, "compare", False) else "train"


def prepare_run(args, create=True):
    """Load and validate the config; create (or check) the run folders.  Returns the Config.

    Everything is validated before anything is created or deleted.  ``create=False`` (the ranks > 0 under torchrun,
    after rank 0 has prepared the run) only loads the config.  On ``--resume_training`` the run's config.yml is
    left alone here: train_loop replaces it with each checkpoint it writes, so that it always describes checkpoint.pth.
    """
    def load(path, overlay=None):   # the config, checked against the runner's network; errors name the file
        config = load_config(path)
        if overlay is not None:
            config = overlay_config(config, overlay)
        try:
            RUNNERS[args.runner].check_config(config)
            if command(args) == "train":
                check_training(config)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        return config

    log, tb = Path(args.log), Path(args.tb)
    if command(args) != "train":
        saved = log / "config.yml"
        if not saved.is_file():
            raise UserError(f"no trained run at {log} (missing config.yml); train it first with --doc {args.doc}")
        return load(saved, resolve_config_path(args.config) if args.config else None)

    if args.resume_training:
        if not RUNNERS[args.runner].resumable:
            raise UserError(f"{args.runner} runs cannot be resumed (they train in about a minute): start a new run "
                            f"with another --doc, or --overwrite")
        if not log.is_dir():
            raise UserError(f"cannot resume: no checkpoint in {log}")
        config = load(resolve_config_path(args.config) if args.config else log / "config.yml")
        resume_checkpoint_path(log)     # checkpoint.pth, or the newest complete snapshot; else one clear error
        return config

    config = load(resolve_config_path(args.config or "anneal.yml"))
    if not create:
        return config
    existing = [p for p in (log, tb) if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"run '{args.doc}' already exists ({existing[0]}); use --resume_training to continue "
                        f"it, another --doc, or --overwrite to replace it")
    args.replaced = []              # the old run is moved aside, and deleted only once the new one has a checkpoint
    try:
        for p in existing:
            aside = p.with_name(f".{p.name}.replaced-{os.getpid()}")
            os.replace(p, aside)
            args.replaced.append((p, aside))
    except OSError as e:
        put_back(args)
        raise UserError(f"--overwrite: cannot move {e.filename or existing[0]} aside: {e.strerror or e}") from e
    try:
        log.mkdir(parents=True, exist_ok=True)
        dump_config(config, log / "config.yml")
    except OSError as e:
        if log.is_dir() and not any(log.iterdir()):
            log.rmdir()                             # leave no empty run folder that would block the next attempt
        raise UserError(f"cannot write the run folder {log}: {e.strerror or e}") from e
    return config


def settle_new_run(args, failed):
    """A new run that failed before its first checkpoint leaves nothing behind (its folders are this invocation's
    own) and an old run it was to replace (--overwrite) comes back; otherwise the old run is deleted now."""
    log = Path(args.log)
    if failed and not any(log.rglob("checkpoint*.pth")):
        setup_logging(args.level)                     # close stdout.txt before removing its folder
        for p in (log, Path(args.tb)):
            if p.is_dir():
                shutil.rmtree(p)
        put_back(args)
        return
    for _, aside in getattr(args, "replaced", []):
        if aside.is_symlink():
            aside.unlink()                            # a link is removed, never what it points to
        else:
            shutil.rmtree(aside)


def put_back(args):
    for original, aside in reversed(getattr(args, "replaced", [])):
        os.replace(aside, original)
    args.replaced = []
