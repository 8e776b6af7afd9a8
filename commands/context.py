"""The run context: everything an invocation is about, built once from the flags and frozen.

``main.py`` parses the flags, checks them and builds one :class:`RunContext`; every command, runner and training
function reads it, nothing writes to it (nor to argparse's Namespace).  The paths of the run follow the official
layout: ``<run>/logs/<doc>`` (config.yml, stdout.txt, checkpoints) and ``<run>/tensorboard/<doc>``.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from configs.checks import SEED_MAX
from errors import UserError


@dataclass(frozen=True)
class RunContext:
    runner: str                 # --runner: a key of runners.RUNNERS
    command: str                # "train", "test", "eval" or "compare"
    resume_training: bool       # command "train" continuing the run
    config: Optional[str]       # --config as given (None: the default of the command)
    run: Path                   # --run: logs, tensorboard, data sets, caches
    doc: str                    # --doc: the run's name
    log: Path                   # <run>/logs/<doc>
    tb: Path                    # <run>/tensorboard/<doc>
    image_folder: Path          # -o: where --test, --eval and --compare write
    seed: int
    device: Optional[str]       # --device as given (None: cuda if available)
    overwrite: bool
    level: int                  # the logging level of --verbose
    comment: str = ""
    # --overwrite of an existing run: where its folders are moved aside ((original, aside) pairs), to be deleted
    # once the new run has a checkpoint, or moved back if it fails before (commands/rundirs.py)
    asides: tuple = ()

    @classmethod
    def from_flags(cls, args, level, runners):
        """The context of parsed flags ``args`` (``level``: the logging level); a bad flag is one UserError."""
        if args.runner not in runners:
            raise UserError(f"unknown runner {args.runner[:40]!r}; choose one of {', '.join(runners)}")
        check_doc(args.doc)
        if not 0 <= args.seed <= SEED_MAX:
            raise UserError(f"--seed must be in [0, {SEED_MAX}], got {str(args.seed)[:40]}")
        if args.test + args.eval + args.compare + args.resume_training > 1:
            raise UserError("--test, --eval, --compare and --resume_training exclude each other")
        command = "test" if args.test else "eval" if args.eval else "compare" if args.compare else "train"
        log, tb = Path(args.run, "logs", args.doc), Path(args.run, "tensorboard", args.doc)
        asides = tuple((p, p.with_name(f".{p.name}.replaced-{os.getpid()}")) for p in (log, tb))
        return cls(runner=args.runner, command=command, resume_training=args.resume_training, config=args.config,
                   run=Path(args.run), doc=args.doc, log=log, tb=tb, image_folder=Path(args.image_folder),
                   seed=args.seed, device=args.device, overwrite=args.overwrite, level=level, comment=args.comment,
                   asides=asides)

    @classmethod
    def of_run(cls, run, doc, runner, command="test", seed=1234, image_folder="images", overwrite=False,
               level=20):
        """The context of a command on an existing run ``<run>/logs/<doc>`` without flags (scripts, tests)."""
        run = Path(run)
        return cls(runner=runner, command=command, resume_training=False, config=None, run=run, doc=doc,
                   log=run / "logs" / doc, tb=run / "tensorboard" / doc, image_folder=Path(image_folder), seed=seed,
                   device=None, overwrite=overwrite, level=level)

    @property
    def new_run(self):
        """True when this invocation creates the run (training that is not resumed)."""
        return self.command == "train" and not self.resume_training


def check_doc(doc):
    if doc in ("", ".", "..") or "/" in doc or (os.altsep and os.altsep in doc) or \
            not doc.isprintable() or len(doc.encode("utf-8", "surrogateescape")) > 255:
        raise UserError(f"--doc must be one plain folder name (not empty, '.' or '..'; no '/', no control or "
                        f"unprintable characters, at most 255 bytes); got {doc[:40]!r}{'...' if len(doc) > 40 else ''}")
