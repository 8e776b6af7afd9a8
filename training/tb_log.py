"""The training's tensorboard log: tensorboardX's SummaryWriter, with a failing disk as one error.

tensorboardX writes the event file from a thread: an OSError there (a full disk) kills that thread with a traceback,
the writer's bounded queue then fills and the next ``add_scalar`` blocks for ever, and its atexit handler raises
the same error again at exit.  :class:`TensorboardLog` guards the event file's record writer instead: the first
OSError is kept (later writes are dropped), the training loop's next ``add_*`` raises it as one UserError, and
closing never raises it a second time (nor does tensorboardX's atexit handler, which finds the writer closed).
"""
from errors import UserError


class _GuardedRecords:
    """The event file's record writer; after the first OSError it keeps the error and drops everything."""

    def __init__(self, records):
        self._records = records
        self.failure = None

    def _guard(self, name, *args):
        if self.failure is not None:
            return None
        try:
            return getattr(self._records, name)(*args)
        except OSError as e:
            self.failure = e
            return None

    def write(self, data):
        return self._guard("write", data)

    def flush(self):
        return self._guard("flush")

    def close(self):
        try:
            self._records.close()
        except OSError as e:          # the file's last buffered bytes: the disk is still full
            if self.failure is None:
                self.failure = e


class TensorboardLog:
    """``SummaryWriter(folder, purge_step=...)`` whose write errors surface in the main thread, once.

    ``add_scalar``, ``add_image`` and the other ``add_*`` methods raise a UserError ``cannot write the tensorboard
    log <folder>: <reason>`` once the event file could not be written; :meth:`close` flushes, closes and raises it
    when it had not been reported yet."""

    def __init__(self, folder, purge_step=None):
        from tensorboardX import SummaryWriter
        self.folder = folder
        try:
            self._writer = SummaryWriter(str(folder), purge_step=purge_step)
        except OSError as e:
            raise UserError(f"cannot write the tensorboard log {folder}: {e.strerror or e}") from e
        self._guards = []
        for file_writer in self._writer.all_writers.values():
            events = file_writer.event_writer._ev_writer      # EventsWriter: its record writer writes the file
            guard = _GuardedRecords(events._py_recordio_writer)
            events._py_recordio_writer = guard
            self._guards.append(guard)
        self._reported = False

    def _failure(self):
        return next((g.failure for g in self._guards if g.failure is not None), None)

    def check(self):
        """Raise the event file's first write error as one UserError (once)."""
        failure = self._failure()
        if failure is not None and not self._reported:
            self._reported = True
            raise UserError(f"cannot write the tensorboard log {self.folder}: {failure.strerror or failure}") \
                from failure

    def __getattr__(self, name):
        method = getattr(self._writer, name)
        if not name.startswith("add_"):
            return method

        def add(*args, **kwargs):
            self.check()
            result = method(*args, **kwargs)
            self.check()
            return result
        return add

    def close(self):
        """Flush and close the event file (and stop tensorboardX's thread); a write error not reported yet is one
        UserError."""
        self._writer.close()
        self.check()
