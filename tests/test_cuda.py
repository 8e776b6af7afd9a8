"""CUDA tests: the product end to end on a GPU (training, resume, every sampler and inpainting, --eval, --compare, fp16
with its gradient scaler, bf16, channels-last training, torch.compile and CUDA graphs, DDP over NCCL in one process).

Every test here is marked ``cuda``: collected everywhere, skipped on a machine without a GPU (tests/conftest.py), and
run by ``benchmarks/gpu_check.sh`` on one.  The runs are tiny digits runs (scikit-learn's 8x8 digits, no download);
--eval scores with the small TorchScript stand-in of tests/test_eval_cli.py instead of the 87 MB Inception network.
cuDNN's benchmark mode and the bilinear upsampling's backward (atomic adds) are not bitwise reproducible on a GPU, so
a resumed run is compared with an uninterrupted one to a tolerance here, where the CPU tests demand bitwise equality.
"""
import json
import os
import socket

import numpy as np
import pytest
import torch
import yaml
from conftest import logged_losses, tiny_digits_config, write_yaml
from test_eval_cli import StandInInception  # the device check's stand-in (benchmarks/gpu_check_setup.py)

import main as cli

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")]


def train(tmp_path, doc, *extra, **overrides):
    """A tiny digits run on cuda:0 (``overrides`` per config section); returns its log folder."""
    cfg = tiny_digits_config(**overrides)
    path = write_yaml(tmp_path / f"{doc}.yml", cfg)
    assert cli.main(["--config", path, "--doc", doc, "--run", str(tmp_path / "run"), "--device", "cuda:0",
                     *extra]) == 0
    return tmp_path / "run" / "logs" / doc


def test_training_and_resume_on_the_gpu(cuda, tmp_path):
    full = train(tmp_path, "full", training={"n_iters": 6, "snapshot_freq": 3, "num_workers": 2})
    state = torch.load(full / "checkpoint.pth", weights_only=True, map_location="cpu")
    assert state["step"] == 6 and "cuda" in state["rng"]
    # the same run stopped at step 3, then resumed from its checkpoint (the random states load onto the CPU)
    part = train(tmp_path, "part", training={"n_iters": 3, "snapshot_freq": 3, "num_workers": 2})
    cfg = yaml.safe_load((part / "config.yml").read_text())
    cfg["training"]["n_iters"] = 6
    (part / "config.yml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["--resume_training", "--doc", "part", "--run", str(tmp_path / "run"), "--device", "cuda:0"]) == 0
    a, b = logged_losses(full), logged_losses(part)
    assert sorted(a) == sorted(b)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-3), key


@pytest.mark.parametrize("sampling", [
    {"method": "langevin"},
    {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin"},
    {"method": "ode", "ode_method": "euler"},
    {"method": "ode"},
    {"method": "langevin", "inpainting": True},
    {"method": "langevin", "inpainting": True, "inpainting_mask": "random_pixels"},
    {"method": "heun", "nfe": 20, "s_churn": 1.0},
    {"method": "dpmpp_2m", "nfe": 20, "denoise": True},
    {"method": "euler_ancestral", "nfe": 20, "inpainting": True},
])
def test_every_sampler_on_the_gpu(cuda, tmp_path, sampling):
    train(tmp_path, "s", training={"n_iters": 2})
    overlay = write_yaml(tmp_path / "sampling.yml", {"sampling": {**sampling, "n_steps_each": 2}})
    out = tmp_path / "out"
    assert cli.main(["--test", "--doc", "s", "--run", str(tmp_path / "run"), "--config", overlay, "-o", str(out),
                     "--device", "cuda:0"]) == 0
    samples = torch.load(out / ("inpainting.pth" if sampling.get("inpainting") else "samples.pth"), weights_only=True)
    assert samples.device.type == "cpu" and torch.isfinite(samples).all()


def test_eval_and_compare_on_the_gpu(cuda, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "standin.pt"
    torch.jit.save(torch.jit.script(StandInInception()), str(weights))
    train(tmp_path, "e", training={"n_iters": 4, "snapshot_freq": 2},
          eval={"n_samples": 10, "batch_size": 4, "max_reference": 50, "inception_weights": str(weights)},
          sampling={"n_steps_each": 2})
    run = str(tmp_path / "run")
    assert cli.main(["--eval", "--doc", "e", "--run", run, "-o", str(tmp_path / "ev"), "--device", "cuda:0"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n_samples"] == 10 and np.isfinite(metrics["fid"]) and np.isfinite(metrics["kid"])
    assert cli.main(["--compare", "--doc", "e", "--run", run, "-o", str(tmp_path / "cmp"), "--device", "cuda:0"]) == 0
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["step"] for r in table["rows"]] == [2, 4]


@pytest.mark.parametrize("amp, compute", [
    ("fp16", {"channels_last": False}),
    ("bf16", {"channels_last": False}),
    ("none", {"channels_last": True}),
    ("bf16", {"channels_last": True}),
])
def test_precision_and_layout_in_training(cuda, tmp_path, amp, compute):
    log = train(tmp_path, "p", training={"n_iters": 4, "amp": amp}, compute=compute)
    losses = logged_losses(log)
    assert all(np.isfinite(v) for v in losses.values()) and (4, "loss") in losses
    state = torch.load(log / "checkpoint.pth", weights_only=True, map_location="cpu")
    assert ("scaler" in state) == (amp == "fp16")          # fp16 trains through the GradScaler, saved with the run
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_compile_and_cuda_graphs(cuda, tmp_path):
    """torch.compile in training (forward and backward), then sampling under CUDA graphs (mode reduce-overhead)."""
    train(tmp_path, "c", training={"n_iters": 2}, compute={"compile": True})
    overlay = write_yaml(tmp_path / "c2.yml", {"compute": {"compile": True, "compile_mode": "reduce-overhead"},
                                               "sampling": {"n_steps_each": 2}})
    out = tmp_path / "out"
    assert cli.main(["--test", "--doc", "c", "--run", str(tmp_path / "run"), "--config", overlay, "-o", str(out),
                     "--device", "cuda:0"]) == 0
    assert torch.isfinite(torch.load(out / "samples.pth", weights_only=True)).all()


def test_ddp_over_nccl_in_one_process(cuda, monkeypatch):
    """The torchrun code path's pieces on NCCL: a process group of one, DistributedDataParallel, one training step
    through the project's step functions, and the collectives the loop decides with."""
    import torch.distributed as dist

    from configs import config_from_dict
    from runners.anneal_runner import AnnealRunner, make_sigmas, ncsn_objective
    from training import distributed
    from training.loop import forward_loss, update
    from training.setup import make_optimizer
    if not dist.is_nccl_available():
        pytest.skip("this PyTorch has no NCCL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    device = distributed.use_device(torch.device("cuda", 0))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        config = config_from_dict(tiny_digits_config())
        model = AnnealRunner.build_model(config).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        opt = make_optimizer(ddp.parameters(), config.optim)
        objective = ncsn_objective(config, make_sigmas(config, device))
        before = [p.detach().clone() for p in model.parameters()]
        loss, _, _ = forward_loss(ddp, objective.loss_fn, torch.rand(8, 1, 8, 8, device=device))
        update(opt, loss)
        assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        assert distributed._all_reduce(2.5, dist.ReduceOp.SUM) == 2.5
        assert distributed._all_reduce(3.0, dist.ReduceOp.MAX) == 3.0
        distributed.barrier()
    finally:
        dist.destroy_process_group()
    assert os.environ["WORLD_SIZE"] == "1"
