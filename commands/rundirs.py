"""A run's folders: ``<run>/logs/<doc>`` (config.yml, stdout.txt, checkpoints) and ``<run>/tensorboard/<doc>``.

The config is loaded and checked against the runner before any folder is touched.  A new run refuses an existing
one unless ``--overwrite``; then the old run is moved aside (``.<doc>.replaced-<pid>``) and deleted only once the new
run has written a checkpoint (or finished); a new run that fails before its first checkpoint is removed and the old
one comes back.  A linked run folder is replaced as a link: what it points to is never deleted.
"""
import os
import shutil
from pathlib import Path

from atomic import remove_stale_temp_files
from configs import check_training, dump_config, load_config, overlay_config, resolve_config_path
from errors import ConfigError, UserError
from reports.outputs import setup_logging
from training.resume import resume_checkpoint_path


def prepare_run(ctx, runner, create=True):
    """Load and validate the config of run ``ctx`` for the runner class ``runner``; create (or check) the run
    folders.  Returns the Config.

    Everything is validated before anything is created or deleted.  ``create=False`` (the ranks > 0 under torchrun,
    after rank 0 has prepared the run) only loads the config.  On ``--resume_training`` the run's config.yml is
    left alone here: train_loop replaces it with each checkpoint it writes, so that it always describes checkpoint.pth.
    """
    def load(path, overlay=None, every_section=False):  # checked against the runner's network; errors name the file
        config = load_config(path)
        if overlay is not None:
            config = overlay_config(config, overlay, every_section=every_section)
        try:
            runner.check_config(config)
            if ctx.command == "train":
                check_training(config)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}", key=e.key) from e
        return config

    log, tb = Path(ctx.log), Path(ctx.tb)
    if ctx.command != "train":
        saved = log / "config.yml"
        if not saved.is_file():
            raise UserError(f"no trained run at {log} (missing config.yml); train it first with --doc {ctx.doc}")
        return load(saved, resolve_config_path(ctx.config) if ctx.config else None)

    if ctx.resume_training:
        if not runner.resumable:
            raise UserError(f"{ctx.runner} runs cannot be resumed (they train in about a minute): start a new run "
                            f"with another --doc, or --overwrite")
        if not log.is_dir():
            raise UserError(f"cannot resume: no checkpoint in {log}")
        # --config: laid over the run's own config.yml (a file with only a training section changes only that)
        config = load(log / "config.yml", resolve_config_path(ctx.config) if ctx.config else None, every_section=True)
        resume_checkpoint_path(log)     # checkpoint.pth, or the newest complete snapshot; else one clear error
        return config

    config = load(resolve_config_path(ctx.config or "anneal.yml"))
    if not create:
        return config
    abandoned_first_write(log)
    existing = [p for p in (log, tb) if p.exists()]
    if existing and not ctx.overwrite:
        raise UserError(f"run '{ctx.doc}' already exists ({existing[0]}); use --resume_training to continue "
                        f"it, another --doc, or --overwrite to replace it")
    try:                            # the old run is moved aside, and deleted only once the new one has a checkpoint
        for original, aside in ctx.asides:
            if original in existing:
                os.replace(original, aside)
    except OSError as e:
        put_back(ctx)
        raise UserError(f"--overwrite: cannot move {e.filename or existing[0]} aside: {e.strerror or e}") from e
    try:
        log.mkdir(parents=True, exist_ok=True)
        dump_config(config, log / "config.yml")
    except OSError as e:
        if log.is_dir() and not any(log.iterdir()):
            log.rmdir()                             # leave no empty run folder that would block the next attempt
        raise UserError(f"cannot write the run folder {log}: {e.strerror or e}") from e
    return config


def settle_new_run(ctx, failed):
    """A new run that failed before its first checkpoint leaves nothing behind (its folders are this invocation's
    own) and an old run it was to replace (--overwrite) comes back; otherwise the old run is deleted now."""
    log = Path(ctx.log)
    if failed and not any(log.rglob("checkpoint*.pth")):
        setup_logging(ctx.level)                      # close stdout.txt before removing its folder
        for p in (log, Path(ctx.tb)):
            if p.is_dir():
                shutil.rmtree(p)
        put_back(ctx)
        return
    for _, aside in ctx.asides:
        if aside.is_symlink():
            aside.unlink()                            # a link is removed, never what it points to
        elif aside.exists():
            shutil.rmtree(aside)


def put_back(ctx):
    """Move the folders of the run that ``--overwrite`` was to replace back where they were."""
    for original, aside in reversed(ctx.asides):
        if aside.exists() or aside.is_symlink():
            os.replace(aside, original)


def abandoned_first_write(log):
    """A run folder that holds nothing but the temporary files of a dead process (killed while writing the run's
    first config.yml) is no run: those files and the folder are removed, so that the run can be started again."""
    if not log.is_dir() or log.is_symlink() or (log / "config.yml").exists():
        return
    remove_stale_temp_files(log)
    if not any(log.iterdir()):
        log.rmdir()
