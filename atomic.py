"""The one atomic file write of the project: checkpoints, exports, statistics caches, config.yml and loss logs.

Imports nothing of the project but :mod:`errors`, so that every package can use it (as it can raise the errors).
"""
import os
from pathlib import Path

from errors import UserError


def temp_path(path):
    """The temporary file :func:`atomic_write` writes ``path`` through: ``.<name>.tmp<pid>`` in the same folder
    (training/resume.py removes those of dead processes that a crash left behind for checkpoints)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path, data, *, what="", note="", sync_folder=False):
    """Write ``data`` (bytes, or a callable ``write(f)`` given the open binary file) to ``path`` through a temporary
    file in the same folder, flushed, fsynced and renamed over ``path``: a crash never leaves a half file.

    With ``sync_folder``, the folder is fsynced too, making the rename itself durable (POSIX).  Whatever fails, the
    temporary file is removed and ``path`` keeps its previous content; an OSError becomes one UserError
    ``cannot write <what><path>: <reason><note>``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync_folder and os.name == "posix":
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {what}{path}: {e.strerror or e}{note}") from e
    finally:
        if tmp.exists():                # only after a failure: never leave a half-written file behind
            tmp.unlink()
