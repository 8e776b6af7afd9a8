"""What a step costs in waiting, and what several processes share: host synchronisations and collectives per
training step and per sampler step, the EMA update without a state dict, bits/dim in its own batches, per-rank
random flips, rank 0 first to load the data, the process group's timeout, and balanced --eval shares."""
import argparse
import datetime
import os
import socket
import sys

import pytest
import torch
from conftest import REPO, tiny_digits_config
from torch.utils.data import Dataset, TensorDataset

from configs import config_from_dict
from errors import ConfigError, UserError

SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier", "reduce",
               "reduce_scatter", "gather", "scatter", "all_gather_object", "broadcast_object_list")


def record_syncs(patch, events):
    """Append ('sync', method) to ``events`` whenever the project's code (not the tests, not torch, not datasets/,
    whose index orders and images are host tensors by design) reads a tensor on the host: on a GPU each of these
    waits for the device.  Installed packages are not the project's, also when the virtual environment lives inside
    the checkout (``.venv/``, as the README's commands make it): torch's Adam reads its CPU step counters."""
    project, skipped = str(REPO), (str(REPO / "tests"), str(REPO / "datasets"), str(REPO / ".venv"))

    def wrap(name, real):
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(project) and not caller.startswith(skipped) and "site-packages" not in caller:
                events.append(("sync", name))
            return real(self, *args, **kwargs)
        return wrapper
    for name in SYNC_METHODS:
        patch(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))


def record_collectives(patch, events):
    import torch.distributed as dist

    def wrap(name, real):
        def wrapper(*args, **kwargs):
            events.append(("collective", name))
            return real(*args, **kwargs)
        return wrapper
    for name in COLLECTIVES:
        if hasattr(dist, name):
            patch(dist, name, wrap(name, getattr(dist, name)))


def record_steps(patch, events, optimizer):
    """('backward',) when a loss is back-propagated, ('step',) when ``optimizer`` steps."""
    real_backward, real_step = torch.Tensor.backward, optimizer.step

    def backward(self, *args, **kwargs):
        events.append(("backward",))
        return real_backward(self, *args, **kwargs)

    def step(*args, **kwargs):
        events.append(("step",))
        return real_step(*args, **kwargs)
    patch(torch.Tensor, "backward", backward)
    optimizer.step = step


class Patcher:
    """setattr with undo, usable in a spawned process (no pytest fixture there)."""

    def __init__(self):
        self.undo = []

    def __call__(self, obj, name, value):
        self.undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def restore(self):
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)


# ------------------------------------------------------------------------- 1. the training step, one process

def test_a_training_step_reads_the_loss_once_after_queuing_the_backward_and_before_the_update(tmp_path, monkeypatch):
    """The real NCSN objective on a tiny network, with the EMA: per step the events are exactly backward, one host
    read (the loss), the optimizer step; no collective in a single process."""
    from datasets import BatchStream
    from models import CondRefineNetDilated
    from runners.anneal_runner import make_sigmas, ncsn_objective
    from training.ema import EMA
    from training.loop import train_loop
    from training.setup import TrainSetup
    n = 4
    cfg = config_from_dict(tiny_digits_config(training={"n_iters": n, "snapshot_freq": 1000, "test_freq": 1000}))
    torch.manual_seed(0)
    model = CondRefineNetDilated(channels=1, image_size=8, ngf=4, num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = TensorDataset(torch.rand(32, 1, 8, 8), torch.zeros(32))
    setup = TrainSetup(model=model, optimizer=opt, train_stream=BatchStream(data, 8, seed=0), test_stream=None,
                       config=cfg, log_dir=tmp_path, writer=None, device=torch.device("cpu"), ema=EMA(model, 0.9))
    objective = ncsn_objective(cfg, make_sigmas(cfg, torch.device("cpu")))
    events = []
    record_syncs(monkeypatch.setattr, events)
    record_collectives(monkeypatch.setattr, events)
    record_steps(monkeypatch.setattr, events, opt)
    assert train_loop(setup, objective) == n
    assert events[:3 * n] == [("backward",), ("sync", "item"), ("step",)] * n, events[:6]
    assert not any(e[0] == "collective" for e in events)


def test_forward_loss_and_update_keep_working_for_the_benchmark():
    from training.loop import backward, forward_loss, optimizer_step, update
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3)
    loss_fn = lambda m, X: ((m(X).squeeze(1) - 1) ** 2, None)          # noqa: E731
    for model, split in ((a, False), (b, True)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            loss, _, _ = forward_loss(model, loss_fn, x)
            if split:
                backward(opt, loss)
                optimizer_step(opt)
            else:
                update(opt, loss)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------------- 1. the training step, two processes

def _counting_worker(rank, tmp, port, n):
    import torch.distributed as dist

    from training.loop import Objective, train_loop
    from training.setup import setup_training
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    patch = Patcher()
    try:
        torch.manual_seed(rank)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        data = TensorDataset(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(40))
        args = argparse.Namespace(seed=1, run=str(tmp), resume_training=False, log=str(tmp / "log"),
                                  tb=str(tmp / f"tb{rank}"))
        os.makedirs(args.log, exist_ok=True)
        config = config_from_dict(tiny_digits_config(training={"batch_size": 8, "n_iters": n, "snapshot_freq": 1000,
                                                               "test_freq": 1000}))
        s = setup_training(args, config, torch.device("cpu"), model, datasets=(data, data))
        events = []

        def loss_fn(m, X):
            events.append(("forward",))
            return (m(X).squeeze(1) - X.sum(1).sin()) ** 2, None
        record_syncs(patch, events)
        record_collectives(patch, events)
        record_steps(patch, events, s.optimizer)
        train_loop(s, Objective(loss_fn=loss_fn))
        patch.restore()
        torch.save(events, tmp / f"events{rank}.pt")
    finally:
        patch.restore()
        dist.destroy_process_group()


def test_two_ranks_take_one_collective_and_one_host_read_per_step(tmp_path):
    import torch.multiprocessing as mp
    dist = pytest.importorskip("torch.distributed")
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = 3
    mp.spawn(_counting_worker, args=(tmp_path, port, n), nprocs=2, join=True)
    for rank in (0, 1):
        events = torch.load(tmp_path / f"events{rank}.pt")
        steps = events[:5 * n]
        assert steps == [("forward",), ("backward",), ("collective", "all_gather"), ("sync", "tolist"),
                         ("step",)] * n, (rank, events[:12])


# ------------------------------------------------------------------------- 1. sampler steps

@pytest.mark.parametrize("method", ["langevin", "pc"])
def test_sampler_steps_never_wait_for_the_device(monkeypatch, method):
    """The levels are read to the host once (one tolist of the sigmas tensor), whatever the number of steps."""
    from sampling import SAMPLERS
    from sampling.schedules import geometric_sigmas
    sigmas = geometric_sigmas(1.0, 0.01, 5, dtype=torch.float64)
    counts = []
    for steps in (1, 4):
        events = []
        with monkeypatch.context() as m:
            record_syncs(m.setattr, events)
            SAMPLERS[method](lambda x, labels: -x, torch.rand(3, 1, 4, 4), sigmas, n_steps_each=steps, denoise=True,
                             callback=lambda info: None)
        counts.append(events)
    assert counts == [[("sync", "tolist")]] * 2
    # the same floats as before, bit for bit
    from sampling.schedules import host_sigmas
    assert host_sigmas(sigmas) == [float(s) for s in sigmas] == host_sigmas([float(s) for s in sigmas])


# ------------------------------------------------------------------------- 2. the EMA update

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4)                  # running stats and an int64 counter: copied buffers

    def forward(self, x):
        return self.norm(self.lin(x))


def old_update(shadow, model, rate):
    """The per-tensor rule the EMA computed before (one state dict per step)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name in params:
                shadow[name].mul_(rate).add_(value, alpha=1 - rate)
            else:
                shadow[name].copy_(value)


def test_the_ema_update_is_bitwise_the_per_tensor_rule_and_builds_no_state_dict_per_step(monkeypatch):
    from training.ema import EMA
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    rate = 0.9137
    ema = EMA(net, rate)
    reference = {k: v.detach().clone() for k, v in net.state_dict().items()}
    calls = []
    real = torch.nn.Module.state_dict

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return real(self, *args, **kwargs)
    for step in range(6):
        opt.zero_grad()
        net(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        old_update(reference, net, rate)
        with monkeypatch.context() as m:
            m.setattr(torch.nn.Module, "state_dict", spy)
            ema.update(net)
        assert set(ema.shadow) == set(reference)
        for k in reference:
            assert ema.shadow[k].dtype == reference[k].dtype and torch.equal(ema.shadow[k], reference[k]), (step, k)
    assert calls.count("Net") <= 1                           # once, to pair the tensors with the shadow's names

    # a parameter replaced by a new tensor, or another network: followed, as the per-tensor rule does
    net.lin.weight = torch.nn.Parameter(torch.randn(4, 3))
    other = Net()
    for model in (net, net, other):
        with torch.no_grad():
            model.lin.weight.add_(1.0)
        old_update(reference, model, rate)
        ema.update(model)
        assert all(torch.equal(ema.shadow[k], reference[k]) for k in reference)


# ------------------------------------------------------------------------- 3. bits/dim batches

class Images(Dataset):
    def __init__(self, n):
        self.x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def gaussian_score(sigmas, tau2=0.09):
    """The exact score of N(0.5, tau2) data perturbed at level sigma: linear, so Hutchinson's trace is exact."""
    def score(x, labels):
        var = tau2 + sigmas.to(x)[labels].reshape(-1, *[1] * (x.ndim - 1)) ** 2
        return -(x - 0.5) / var
    return score


def bpd_record(monkeypatch, sizes, **eval_cfg):
    import commands.evaluate as sc
    from commands.context import RunContext
    cfg = config_from_dict(tiny_digits_config(eval={"bpd": True, "bpd_n": 5, "bpd_rtol": 1e-7, "bpd_atol": 1e-7,
                                                    **eval_cfg}))
    sigmas = torch.tensor([1.0, 0.3, 0.1, 0.05], dtype=torch.float64)
    real = sc.ode_log_likelihood

    def spy(score_at, x, *args, **kwargs):
        sizes.append(len(x))
        return real(score_at, x, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(sc, "ode_log_likelihood", spy)
        m.setattr(sc, "get_dataset", lambda d, root: (None, Images(7)))
        m.setattr(sc, "data_transform", lambda x, d: x)          # no dequantisation noise: a deterministic result
        return sc.bpd_of_test_set(cfg, gaussian_score(sigmas), sigmas, RunContext.of_run("unused", "x", "AnnealRunner",
                                                                                      seed=0), torch.device("cpu"))


def test_bits_per_dim_runs_in_batches_of_eval_bpd_batch_size(monkeypatch):
    split, whole, other = [], [], []
    a = bpd_record(monkeypatch, split, batch_size=500, bpd_batch_size=2)
    b = bpd_record(monkeypatch, whole, batch_size=500, bpd_batch_size=100)
    c = bpd_record(monkeypatch, other, batch_size=1, bpd_batch_size=2)
    assert split == [2, 2, 1] and whole == [5] and other == [2, 2, 1]     # eval.batch_size plays no part
    assert a == c and a["bpd_batch_size"] == 2 and b["bpd_batch_size"] == 100
    assert a["bpd_n"] == b["bpd_n"] == 5
    assert a["bpd"] == pytest.approx(b["bpd"], rel=1e-6)                 # per-example maths: batching changes nothing
    assert config_from_dict({}).eval.bpd_batch_size == 100


@pytest.mark.parametrize("value, message", [(0, "eval.bpd_batch_size must be > 0, got 0"),
                                            (-3, "eval.bpd_batch_size must be > 0, got -3"),
                                            (10 ** 6, "eval.bpd_batch_size must be <= 65536")])
def test_eval_bpd_batch_size_is_checked(value, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict({"eval": {"bpd_batch_size": value}})
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------- 4. random flips per rank

class RandomItems(Dataset):
    """Each item is a random number drawn by the loading process (as a random flip is)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.rand(1), i


def first_batch(rank, world):
    from datasets import BatchStream
    x, _ = next(BatchStream(RandomItems(), 4, seed=7, num_workers=1, rank=rank, world_size=world))
    return x.flatten()


def test_dataloader_workers_draw_different_random_numbers_in_each_rank():
    from datasets import BatchStream
    single, r0, r1 = first_batch(0, 1), first_batch(0, 2), first_batch(1, 2)
    assert len(r0) == len(r1) == 2
    assert torch.equal(r0, single[:2])                  # rank 0 draws as a single process does
    assert not torch.equal(r0, r1)                      # and the other rank draws its own numbers
    stream = BatchStream(RandomItems(), 4, seed=7)
    stream.epoch = 3
    assert stream.worker_seed() == 10                   # rank 0: seed + epoch, as always


# ------------------------------------------------------------------------- 5. rank 0 loads the data set first

@pytest.mark.parametrize("me", [0, 1])
def test_rank_0_loads_the_data_set_before_the_other_ranks(monkeypatch, tmp_path, me):
    import datasets
    import training.distributed as td
    import training.setup as ts
    events = []

    class Stop(Exception):
        pass

    def load(data_cfg, root):
        events.append("load")
        raise Stop                                      # the order is all this test needs
    monkeypatch.setattr(datasets, "get_dataset", load)
    monkeypatch.setattr(td, "is_main", lambda: me == 0)
    monkeypatch.setattr(td, "dist_max", lambda value: events.append("collective") or value)
    monkeypatch.setattr(ts, "world_size", lambda: 2)
    monkeypatch.setattr(ts, "rank", lambda: me)
    args = argparse.Namespace(seed=1, run=str(tmp_path), resume_training=False, log=str(tmp_path), tb=str(tmp_path))
    with pytest.raises(Stop):
        ts.setup_training(args, config_from_dict(tiny_digits_config()), torch.device("cpu"), torch.nn.Linear(1, 1))
    assert events == (["load", "collective"] if me == 0 else ["collective", "load"])

    # rank 0 failed: the others do not load, and stop with one line
    events.clear()
    monkeypatch.setattr(td, "dist_max", lambda value: events.append("collective") or 1)
    monkeypatch.setattr(td, "is_main", lambda: False)
    with pytest.raises(UserError, match=r"^rank 0 could not load the data set \(it reports why\)$"):
        ts.setup_training(args, config_from_dict(tiny_digits_config()), torch.device("cpu"), torch.nn.Linear(1, 1))
    assert events == ["collective"]


# ------------------------------------------------------------------------- 6. the process group's timeout

def test_the_process_group_gets_an_explicit_timeout(monkeypatch):
    import torch.distributed as dist

    from training.distributed import init_distributed
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NCSN_DIST_TIMEOUT_MIN", raising=False)
    assert init_distributed(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("NCSN_DIST_TIMEOUT_MIN", "240")
    init_distributed(torch.device("cpu"))
    assert calls == [(("gloo",), {"timeout": datetime.timedelta(minutes=60)}),
                     (("gloo",), {"timeout": datetime.timedelta(minutes=240)})]
    for bad in ("0", "-5", "ten", "1.5", ""):
        monkeypatch.setenv("NCSN_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(UserError, match=r"^environment variable NCSN_DIST_TIMEOUT_MIN must be an integer in "
                                            r"\[1, 10080\], got ") as info:
            init_distributed(torch.device("cpu"))
        assert "\n" not in str(info.value)
    assert len(calls) == 2


def test_eval_deals_the_missing_batches_so_that_shares_differ_by_at_most_one(monkeypatch, tmp_path):
    import commands.evaluate as ev
    (tmp_path / "batches").mkdir()
    for k in (0, 1, 2, 3, 5):                           # an export resumed after an uneven interruption
        (tmp_path / "batches" / f"batch_{k:06d}.npy").write_bytes(b"")
    barriers = []
    monkeypatch.setattr(ev, "barrier", lambda: barriers.append(1))
    monkeypatch.setattr(ev, "world_size", lambda: 2)
    shares = []
    for me in (0, 1):
        monkeypatch.setattr(ev, "rank", lambda me=me: me)
        shares.append(ev.my_batches(tmp_path, 11))
    assert shares == [[4, 7, 9], [6, 8, 10]] and len(barriers) == 2
