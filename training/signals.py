"""Clean stops: while a run trains, SIGINT/SIGTERM only raise a flag; the loop finishes its step and saves."""
import signal
import sys
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def stop_on_signals():
    """While active, SIGINT/SIGTERM set ``flag['signum']`` instead of killing the process; a 2nd SIGINT aborts."""
    flag = {"signum": None}

    def handler(signum, _frame):
        if flag["signum"] == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum
        again = " (Ctrl-C again: stop at once, without saving)" if signum == signal.SIGINT else ""
        tqdm.write(f"received {signal.Signals(signum).name}: finishing this step, then saving a checkpoint{again}",
                   file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
