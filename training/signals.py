"""Clean stops.  While a run trains, SIGINT/SIGTERM/SIGHUP only raise a flag: the loop finishes its step and saves.
Outside the training loop (setting up, sampling, evaluating) SIGTERM/SIGHUP stop the command with a message and
exit code 128 + the signal number, like SIGINT does, instead of killing it without a word."""
import signal
import sys
from contextlib import contextmanager

from tqdm import tqdm

from errors import TrainingInterrupted

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stop_on_signals():
    """While active, SIGINT/SIGTERM/SIGHUP set ``flag['signum']`` instead of killing the process; a 2nd SIGINT
    aborts."""
    flag = {"signum": None}

    def handler(signum, _frame):
        if flag["signum"] == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum
        again = " (Ctrl-C again: stop at once, without saving)" if signum == signal.SIGINT else ""
        tqdm.write(f"received {signal.Signals(signum).name}: finishing this step, then saving a checkpoint{again}",
                   file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def stop_with_message():
    """While active, SIGTERM/SIGHUP raise TrainingInterrupted (exit code 128 + the signal number), so that the command
    says why it stopped; SIGINT keeps raising KeyboardInterrupt.  train_loop's own handlers take over while it runs."""
    def handler(signum, _frame):
        raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name}", 128 + signum)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
