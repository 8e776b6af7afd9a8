"""Multi-process training (DistributedDataParallel under torchrun) with the gloo backend on the CPU."""
import argparse
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, run_main, tiny_digits_config
from torch.utils.data import TensorDataset

dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def test_batch_stream_shards_partition_every_global_batch():
    from datasets import BatchStream
    data = TensorDataset(torch.arange(23))
    whole = BatchStream(data, 6, seed=5)
    shards = [BatchStream(data, 6, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(9):                                       # 2 epochs and a bit; the 5-example last batch splits 3/2
        (full,), (a,), (b,) = next(whole), next(shards[0]), next(shards[1])
        assert set(a.tolist()).isdisjoint(b.tolist())
        assert torch.equal(torch.cat([a, b]), full)
        assert len(a) - len(b) in (0, 1) and len(b) > 0
    assert [s.state_dict() for s in shards] == [whole.state_dict()] * 2 == [{"epoch": 2, "batch": 1}] * 2
    # a last batch of 1 example cannot be split over 2 processes: dropped there (and only there)
    odd = [BatchStream(TensorDataset(torch.arange(13)), 6, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert odd[0].batches_per_epoch == 2 and BatchStream(TensorDataset(torch.arange(13)), 6, 1).batches_per_epoch == 3
    assert [len(next(odd[0])[0]) for _ in range(3)] == [3, 3, 3] and odd[0].state_dict() == {"epoch": 1, "batch": 1}


def torchrun(args, cwd, nproc=2):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def test_torchrun_trains_one_run_that_a_single_process_loads_and_samples(tmp_path):
    from configs import load_config
    from runners import AnnealRunner
    from training.checkpoint import load_checkpoint
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(tiny_digits_config()))
    # --run is left at its default: torchrun's own parser takes "--run" for an ambiguous "--run-path"
    p = torchrun(["--config", str(cfg), "--doc", "d", "--device", "cpu"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    log = tmp_path / "run" / "logs" / "d"
    assert sorted(f.name for f in log.iterdir()) == ["checkpoint.pth", "checkpoint_3.pth", "checkpoint_6.pth",
                                                     "config.yml", "stdout.txt"]
    assert len(list((tmp_path / "run" / "tensorboard" / "d").iterdir())) == 1       # rank 0's event file only
    text = (log / "stdout.txt").read_text()
    assert text.count("step: 6, loss:") == 1 and text.count("test_dsm_loss") == 3
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 6 and not any(k.startswith("module.") for k in state["model"])
    AnnealRunner.build_model(load_config(log / "config.yml")).load_state_dict(state["model"])      # strict, unprefixed keys

    # a second start is refused on rank 0, and every rank stops (no hang), nothing changed
    before = (log / "checkpoint.pth").read_bytes()
    p = torchrun(["--config", str(cfg), "--doc", "d", "--device", "cpu"], tmp_path)
    assert p.returncode != 0 and "error: run 'd' already exists" in p.stderr
    assert (log / "checkpoint.pth").read_bytes() == before

    p = run_main(["--doc", "d", "--test", "-o", str(tmp_path / "img"), "--device", "cpu"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    samples = torch.load(tmp_path / "img" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()


# ------------------------------------------------------------------ gradient synchronisation through train_loop

def _toy_training(tmp, rank, world):
    """Train a small MLP with the project's setup_training/train_loop on a deterministic regression loss."""
    from compute.precision import unwrap
    from configs import load_config
    from training.loop import Objective, train_loop
    from training.rng import seed_everything
    from training.setup import setup_training
    torch.set_num_threads(1)
    seed_everything(100 + rank)                             # a different initialisation in each process
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    data = TensorDataset(x, torch.zeros(40))
    args = argparse.Namespace(seed=1, run=str(tmp), resume_training=False, log=str(tmp / f"log{world}"),
                              tb=str(tmp / f"tb{world}_{rank}"))
    os.makedirs(args.log, exist_ok=True)
    config = load_config(tmp / "toy.yml")
    s = setup_training(args, config, torch.device("cpu"), model, datasets=(data, data))

    def loss_fn(m, X):                                      # fit sin of a projection: per-example squared errors
        return (m(X).squeeze(1) - torch.sin(X @ torch.tensor([1.0, -2.0, 0.5, 1.5]))) ** 2, None

    train_loop(s, Objective(loss_fn=loss_fn, test_fn=lambda m, X: loss_fn(m, X)[0].mean().item()))
    return {k: v.detach().clone() for k, v in unwrap(s.model).state_dict().items()}


def _worker(rank, tmp, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.save(_toy_training(tmp, rank, 2), tmp / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_keep_identical_weights_equal_to_one_process_on_the_whole_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp
    cfg = tiny_digits_config(training={"batch_size": 8, "n_iters": 5, "snapshot_freq": 5, "test_freq": 5},
                             optim={"optimizer": "SGD", "lr": 0.05})
    (tmp_path / "toy.yml").write_text(yaml.safe_dump(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(tmp_path, port), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(100)
    start = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).state_dict()
    single = _toy_training(tmp_path, 0, 1)                    # the same run in one process, whole batches
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k                   # gradients averaged: never diverged
        torch.testing.assert_close(r0[k], single[k], rtol=1e-5, atol=1e-6)   # mean of shard means = batch mean
    assert max(float((single[k] - v).abs().max()) for k, v in start.items()) > 1e-3      # it did train
