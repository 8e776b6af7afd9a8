"""Devices and processes: the device to run on, and several training processes under torchrun (joining the process
group, ranks, and the few collective decisions).

Without torchrun everything here is a no-op for a single process (rank 0, world size 1).
"""
import os

import torch

from errors import UserError


def _env_int(name, default, low, high=None):
    """An integer environment variable set by torchrun, checked: one clear error when it is malformed."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise UserError(f"environment variable {name} must be {bound}, got {text[:40]!r}")
    return value


def env_world_size():
    """The number of processes torchrun started (1 without torchrun)."""
    return _env_int("WORLD_SIZE", 1, 1, 1_000_000)


def env_rank():
    """This process's rank as torchrun announced it (0 without torchrun); usable before the group exists."""
    world = env_world_size()
    return _env_int("RANK", 0, 0, world - 1) if world > 1 else 0


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")     # set by torchrun with WORLD_SIZE


def check_torchrun_env():
    """With WORLD_SIZE > 1, torchrun's other variables checked together, before any process group is joined: one
    UserError naming every one that is missing (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), else the first that is
    malformed (RANK and LOCAL_RANK in [0, WORLD_SIZE - 1], MASTER_PORT in [1, 65535]).  Without torchrun: nothing."""
    world = env_world_size()
    if world == 1:
        return
    missing = [name for name in TORCHRUN_VARIABLES if not os.environ.get(name, "").strip()]
    if missing:
        names = ", ".join(missing)
        raise UserError(f"WORLD_SIZE={world} but {names} {'is' if len(missing) == 1 else 'are'} not set: start the "
                        f"processes with torchrun (docs/multi_gpu.md), or unset WORLD_SIZE to run one process")
    _env_int("RANK", 0, 0, world - 1)
    _env_int("LOCAL_RANK", 0, 0, world - 1)
    _env_int("MASTER_PORT", 0, 1, 65535)


DEFAULT_TIMEOUT_MIN = 60      # NCSN_DIST_TIMEOUT_MIN: how long a collective waits for the slowest process


def dist_timeout():
    """How long any collective (a barrier, the per-step loss) may wait for the other processes: the environment
    variable NCSN_DIST_TIMEOUT_MIN in minutes (an integer, default 60; PyTorch's own default is 10 minutes for nccl),
    as a timedelta.  Processes wait for each other while rank 0 writes a checkpoint or the files of --eval, and at
    the end of an --eval export (its batches are dealt so that the ranks' shares differ by at most one batch)."""
    import datetime
    return datetime.timedelta(minutes=_env_int("NCSN_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN, 1, 7 * 24 * 60))


def init_distributed(device, refusal=None):
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on CUDA, else gloo; timeout
    :func:`dist_timeout`) and return this rank's device (cuda:LOCAL_RANK on CUDA).  Without torchrun: ``device``
    unchanged.  ``refusal``: when the command cannot run in several processes, the one-line reason, raised as a
    UserError under torchrun.

    torchrun's variables are checked first (:func:`check_torchrun_env`).  The rendezvous waits at most
    :func:`dist_timeout` for the other processes (init_process_group's own ``timeout``) and runs in a helper thread,
    so that SIGINT and SIGTERM reach the main thread while it waits and stop the command with the usual message and
    exit code 128 + the signal number (main.py's handlers); a rendezvous that fails or times out is one UserError."""
    if env_world_size() == 1:
        return device
    import torch.distributed as dist
    if refusal:
        raise UserError(refusal)
    check_torchrun_env()
    timeout = dist_timeout()
    if not dist.is_available():
        raise UserError("torchrun started several processes, but this PyTorch has no torch.distributed")
    if device.type == "cuda":
        device = use_device(torch.device("cuda", _env_int("LOCAL_RANK", 0, 0, torch.cuda.device_count() - 1)))
    _rendezvous(dist, "nccl" if device.type == "cuda" else "gloo", timeout)
    return device


def _rendezvous(dist, backend, timeout):
    """``dist.init_process_group(backend, timeout=timeout)`` in a daemon thread, the main thread waiting in short
    joins (interruptible by signals, unlike the C++ wait of the rendezvous itself)."""
    import threading
    outcome = {}

    def join():
        try:
            dist.init_process_group(backend, timeout=timeout)
        except BaseException as e:      # handed to the main thread below
            outcome["error"] = e
    thread = threading.Thread(target=join, name="ncsn-rendezvous", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    error = outcome.get("error")
    if error is None:
        return
    if isinstance(error, UserError) or not isinstance(error, (RuntimeError, ValueError, OSError)):
        raise error
    where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(f"cannot join the other {env_world_size() - 1} torchrun process(es) at {where} within "
                    f"{timeout} (NCSN_DIST_TIMEOUT_MIN): {first}") from error


def close_distributed():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size():
    """The number of training processes: > 1 only under torchrun, after init_distributed joined the group."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return torch.distributed.get_rank() if world_size() > 1 else 0


def is_main():
    """True in the process that logs and writes files (rank 0; the only process without torchrun)."""
    return rank() == 0


_SCALARS = {}       # device -> the one float64 scalar that every _all_reduce on it reuses
_LAST_GATHER = []   # the tensors of the last mean_and_max, for the same reason


def _all_reduce(value, op):
    # The reduced tensor stays referenced here.  A fresh tensor per call could see its last reference dropped by
    # gloo's worker thread just after the collective; that thread then needs the GIL, and in torch 2.4 (before
    # pytorch PR #154976) destroy_process_group holds the GIL while it waits for that thread: a hang at exit.
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    if device not in _SCALARS:
        _SCALARS[device] = torch.zeros((), dtype=torch.float64, device=device)
    t = _SCALARS[device]
    t.fill_(float(value))
    dist.all_reduce(t, op=op)
    return t.item()


def dist_mean(value):
    """The mean of a number over all processes (the number itself in a single process)."""
    return value if world_size() == 1 else _all_reduce(value, torch.distributed.ReduceOp.SUM) / world_size()


def dist_max(value):
    """The largest value of a number over all processes (the number itself in a single process)."""
    return value if world_size() == 1 else _all_reduce(value, torch.distributed.ReduceOp.MAX)


def mean_and_max(tensor, number):
    """(the mean over all processes of the 0-d ``tensor``, the largest ``number`` of all processes) as Python
    numbers, with one host synchronisation and, under torchrun, ONE collective: an all_gather of both from every
    process (dist_mean and dist_max would take two of each).  A single process: ``(tensor.item(), number)``, no
    collective.  Every process sums the gathered rows in rank order, so all of them decide on the same values."""
    if world_size() == 1:
        return tensor.item(), number
    dist = torch.distributed
    mine = torch.stack([tensor.detach().reshape(()).to(torch.float64),
                        torch.full((), float(number), dtype=torch.float64, device=tensor.device)])
    rows = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(rows, mine)
    _LAST_GATHER[:] = [mine, *rows]     # kept referenced until the next step: see _all_reduce
    table = torch.stack(rows).tolist()
    return sum(row[0] for row in table) / len(table), max(row[1] for row in table)


def barrier():
    if world_size() > 1:
        torch.distributed.barrier()


def main_process_first(fn):
    """Run ``fn(True)`` on rank 0 (which may create or delete files), then ``fn(False)`` on the other ranks once rank 0
    has succeeded; if rank 0 failed, it raises its error and the other ranks return None (rank 0 reports it)."""
    failure, result = None, None
    if is_main():
        try:
            result = fn(True)
        except BaseException as e:      # re-raised below, after telling the other ranks
            failure = e
    if dist_max(failure is not None):   # every rank learns whether rank 0 succeeded (and waits for its files)
        if failure is None:
            return None
        raise failure
    return result if is_main() else fn(False)


def pick_device(name):
    """The device named by --device (default: cuda if available); one clear error for an unusable name."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"unknown device {name[:40]!r}; use cpu, cuda or cuda:N") from e
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise UserError(f"--device {name[:40]!r} is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    return use_device(device)


def use_device(device):
    """``device`` with its index, made the current CUDA device (a no-op for the CPU): the generator that
    ``torch.random.fork_rng`` forks, the DataLoader's pin-memory thread, and every call without a device argument
    then use this GPU, not GPU 0."""
    if device.type != "cuda":
        return device
    device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    torch.cuda.set_device(device)
    return device
