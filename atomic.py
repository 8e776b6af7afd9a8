"""The one atomic file write of the project: checkpoints, exports, statistics caches, config.yml and loss logs.

Imports nothing of the project but :mod:`errors`, so that every package can use it (as it can raise the errors).
"""
import json
import logging
import os
import re
from pathlib import Path

from errors import UserError


def temp_path(path):
    """The temporary file :func:`atomic_write` writes ``path`` through: ``.<name>.tmp<pid>`` in the same folder
    (:func:`remove_stale_temp_files` removes those of dead processes that a crash left behind)."""
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


def write_json(path, value, **kwargs):
    """``value`` as indented JSON (and a final newline) through :func:`atomic_write`; ``kwargs`` go to it."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode(), **kwargs)
_TEMP = re.compile(r"\.(.+)\.tmp(\d+)")


def remove_stale_temp_files(folder, name="*"):
    """Remove the temporary files :func:`atomic_write` left in ``folder`` for the files matching the glob ``name``
    (``checkpoint*``, ``*.npz``) when their process is dead (killed while writing); return their paths.

    Files of a live process (it may be writing them now) and files whose process cannot be checked are kept; a file
    that cannot be removed is one warning."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".{name}.tmp*"):
        m = _TEMP.fullmatch(p.name)
        if not m or not p.is_file() or _process_alive(int(m[2])):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue                    # removed meanwhile
        except OSError as e:
            logging.warning("cannot remove the stale temporary file %s: %s", p, e.strerror or e)
            continue
        removed.append(p)
        logging.info("removed %s, left by a process that ended while writing %s", p, m[1])
    return removed


def _process_alive(pid):
    if os.name != "posix" or pid <= 0:
        return True                     # os.kill(pid, 0) would not be a harmless probe: keep the file
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # alive, someone else's
    return True
