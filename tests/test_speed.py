"""The fast paths (compute/precision.py, the ``compute`` section) track the faithful float32 path.

Golden: the official code run fully in float64 (``golden_true64.pt``) is matched to 1e-12 by the faithful network
AND by the fused, channels-last one.  In float32 the fast path's forward, loss and one training step's gradients stay
within 1e-5 (relative) of the faithful path, sampling chains on a trained digits model stay within 1e-3 (absolute, in
[0, 1] pixel units) after 40 steps, and the test loss is the same to 1e-5.  torch.compile is tested end to end on a
tiny network (``--test`` through the CLI; its first call compiles, about 2 minutes on this CPU).
"""
import dataclasses

import pytest
import torch
from conftest import REPO, tiny_digits_config
from test_models import GOLDEN, golden, golden_model, rel_err, strip_module  # noqa: F401  (golden is a fixture)

import main as cli
from compute.precision import FAITHFUL, native_bf16, prepare_model, resolve_amp, score_function, to_layout, unwrap
from configs import config_from_dict
from losses import anneal_dsm_score_estimation
from models import CondRefineNetDilated
from runners.anneal_runner import AnnealRunner, make_sigmas, ncsn_objective
from sampling import anneal_langevin_dynamics
from training.checkpoint import load_checkpoint
from training.loop import forward_loss

FAST = config_from_dict({}).compute          # the shipped defaults: channels-last, fused InstanceNorm++
SLOW = config_from_dict({"compute": FAITHFUL}).compute
TOL_TRUE64 = 1e-12


@pytest.fixture(scope="module")
def true64():
    path = GOLDEN / "golden_true64.pt"
    if not path.exists():
        pytest.skip(f"golden reference not found: {path}")
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("compute, training", [(SLOW, False), (FAST, False), (FAST, True)],
                         ids=["faithful", "fast", "fast-cpu-training"])
def test_float64_matches_the_official_code_run_in_float64(golden, true64, compute, training):   # noqa: F811
    """Every path to 1e-12: the faithful one, the fast sampling network (channels-last, the fused norm's affine map
    without gradients) and the fast network as a CPU trains it (NCHW, the norm folded into instance_norm's kernel
    under autograd)."""
    data, _, _ = golden
    model = prepare_model(golden_model(golden, torch.float64), compute, training=training)
    x, labels, sigmas, z = data["x"], data["labels"], data["sigmas"], data["z"]
    with torch.no_grad():
        assert rel_err(model(to_layout(x, compute), labels), true64["out"]) < TOL_TRUE64
    loss = anneal_dsm_score_estimation(model, to_layout(x, compute), labels, sigmas, anneal_power=2.0, noise=z)
    assert rel_err(loss, true64["dsm_loss"]) < TOL_TRUE64
    loss.backward()
    grads = strip_module(true64["grads"])
    errors = {name: rel_err(p.grad, grads[name]) for name, p in model.named_parameters()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL_TRUE64, f"{worst}: {errors[worst]:.2e}"


def test_float32_fast_path_tracks_the_faithful_one_on_the_golden_model(golden):   # noqa: F811
    data, _, _ = golden
    x, labels, z = data["x"].float(), data["labels"], data["z"].float()
    results = {}
    for name, compute in (("faithful", SLOW), ("fast", FAST)):
        model = prepare_model(golden_model(golden, torch.float32), compute)
        with torch.no_grad():
            out = model(to_layout(x, compute), labels)
        loss = anneal_dsm_score_estimation(model, x, labels, data["sigmas_float32"], anneal_power=2.0, noise=z)
        loss.backward()
        results[name] = out, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    (out0, loss0, g0), (out1, loss1, g1) = results["faithful"], results["fast"]
    assert rel_err(out1, out0) < 1e-5 and rel_err(out0, data["out_float32"]) < 1e-5
    assert rel_err(loss1, loss0) < 1e-6
    worst = max(rel_err(g1[n], g0[n]) for n in g0)
    assert worst < 1e-4


@pytest.mark.parametrize("form", ["_instance_norm_plus_fused", "_instance_norm_plus_folded"])
def test_fast_norm_negative_control(form, golden, true64, monkeypatch):   # noqa: F811
    """The 1e-12 comparisons can fail: the sampling (fused) or training (folded) norm with alpha off by 1e-3 misses
    the golden output, or the golden gradients, by far."""
    import models.normalization as normalization
    right = getattr(normalization, form)

    def wrong(x, gamma, alpha, beta):
        return right(x, gamma, alpha * (1 + 1e-3), beta)
    monkeypatch.setattr(normalization, form, wrong)
    data, _, _ = golden
    training = form.endswith("folded")
    model = prepare_model(golden_model(golden, torch.float64), FAST, training=training)
    if not training:
        with torch.no_grad():
            assert rel_err(model(data["x"], data["labels"]), true64["out"]) > 1e-6
        return
    loss = anneal_dsm_score_estimation(model, data["x"], data["labels"], data["sigmas"], anneal_power=2.0,
                                       noise=data["z"])
    loss.backward()
    grads = strip_module(true64["grads"])
    assert max(rel_err(p.grad, grads[name]) for name, p in model.named_parameters()) > 1e-6


def test_folded_norm_differentiates_twice_and_keeps_half_precision():
    """The folded InstanceNorm++ (training on a CPU) passes gradcheck and gradgradcheck in float64 (sliced score
    matching differentiates the network's input gradient), for the conditional (per-example parameters) and the
    unconditional (shared parameters) form; under bf16 autocast it returns bf16, within 2e-2 of the float64 result
    of the same bf16 input."""
    from models.normalization import _instance_norm_plus, _instance_norm_plus_folded
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen).requires_grad_()
    for rows in (2, 1):
        gamma, alpha, beta = (torch.randn(rows, 3, dtype=torch.float64, generator=gen).requires_grad_()
                              for _ in range(3))
        args = (x, gamma, alpha, beta)
        assert (_instance_norm_plus_folded(*args) - _instance_norm_plus(*args)).abs().max().item() < 1e-13
        assert torch.autograd.gradcheck(_instance_norm_plus_folded, args)
        assert torch.autograd.gradgradcheck(_instance_norm_plus_folded, args)
    xb = (3 + 2 * torch.randn(4, 16, 8, 8, generator=gen)).bfloat16().requires_grad_()
    gamma, alpha, beta = (1 + 0.1 * torch.randn(4, 16, generator=gen) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _instance_norm_plus_folded(xb, gamma, alpha, beta)
    reference = _instance_norm_plus(xb.detach().double(), gamma.double(), alpha.double(), beta.double())
    assert out.dtype == torch.bfloat16 and (out.double() - reference).abs().max().item() < 2e-2


def test_one_training_step_of_the_runner_tracks_the_faithful_path():
    """Through the runner's own objective and step function: the same loss and gradients to 1e-5 / 1e-4."""
    results = {}
    for name, compute in (("faithful", SLOW), ("fast", FAST)):
        cfg = config_from_dict({"data": {"dataset": "DIGITS", "image_size": 8, "channels": 1},
                                "model": {"ngf": 16}, "training": {"amp": "none"},
                                "compute": dataclasses.asdict(compute)})
        torch.manual_seed(0)
        model = prepare_model(AnnealRunner.build_model(cfg), cfg.compute)
        objective = ncsn_objective(cfg, make_sigmas(cfg, torch.device("cpu")))
        x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)
        loss, _, _ = forward_loss(model, objective.loss_fn, x, "none")
        loss.backward()
        results[name] = loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])
    assert results["fast"][0] == pytest.approx(results["faithful"][0], rel=1e-5)
    assert rel_err(results["fast"][1], results["faithful"][1]) < 1e-4


def test_state_dict_keys_and_contents_do_not_depend_on_the_compute_path():
    torch.manual_seed(0)
    plain = CondRefineNetDilated(channels=3, image_size=8, ngf=8, num_classes=4)
    fast = prepare_model(CondRefineNetDilated(channels=3, image_size=8, ngf=8, num_classes=4), FAST)
    fast.load_state_dict(plain.state_dict())
    a, b = plain.state_dict(), unwrap(fast).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert fast.begin_conv.weight.is_contiguous(memory_format=torch.channels_last)
    switches = [(m.fast if hasattr(m, "fast") else m.as_conv) for m in fast.modules() if hasattr(m, "fast")
                or hasattr(m, "as_conv")]
    assert len(switches) == 1 + 4 and all(switches)          # the one shared ELU, the four CRP pools


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu, 28) == ("bf16" if native_bf16(cpu) else "none")
    assert resolve_amp("auto", cpu, 8) == "none"                     # too small to pay, whatever the CPU
    assert resolve_amp("fp16", cpu, 8) == "fp16" and resolve_amp("none", cpu, 28) == "none"


def test_sampling_chains_and_test_loss_of_a_trained_model_agree(tmp_path, write_config):
    """A digits model trained for a few steps; 40 annealed Langevin steps from the same start and noise with the
    faithful and the fast path end within 1e-3 of each other; the test DSM loss on fixed noise agrees to 1e-5."""
    cfg_file = write_config(tiny_digits_config(training={"n_iters": 30, "snapshot_freq": 30, "test_freq": 100},
                                               model={"ngf": 16}))
    run = tmp_path / "run"
    assert cli.main(["--config", str(cfg_file), "--run", str(run), "--doc", "d"]) == 0
    state = load_checkpoint(run / "logs" / "d" / "checkpoint.pth")
    samples, losses = {}, {}
    for name, compute in (("faithful", SLOW), ("fast", FAST)):
        cfg = config_from_dict({**state["config"], "compute": dataclasses.asdict(compute)})
        model = prepare_model(AnnealRunner.build_model(cfg), compute)
        model.load_state_dict(state["model"])
        model.eval()
        score = score_function(model, torch.device("cpu"), "none", compute)
        sigmas = make_sigmas(cfg, torch.device("cpu"), dtype=torch.float64)
        torch.manual_seed(5)
        x0 = to_layout(torch.rand(16, 1, 8, 8), compute)
        samples[name] = anneal_langevin_dynamics(score, x0, sigmas, n_steps_each=10, step_lr=cfg.sampling.step_lr)
        x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
        labels = torch.arange(64) % len(sigmas)
        with torch.no_grad():
            losses[name] = anneal_dsm_score_estimation(model, x, labels, sigmas.float(),
                                                       noise=torch.randn(64, 1, 8, 8,
                                                                         generator=torch.Generator().manual_seed(4)))
    assert (samples["fast"] - samples["faithful"]).abs().max().item() < 1e-3
    assert losses["fast"].item() == pytest.approx(losses["faithful"].item(), rel=1e-5)


def test_compiled_sampling_through_the_cli(tmp_path, write_config, monkeypatch):
    """compute.compile: --test samples through torch.compile (inductor), writes the same grid shape, and the compiled
    kernels are cached under <run>/cache/inductor for the next run."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cfg_file = write_config(tiny_digits_config(training={"n_iters": 2, "snapshot_freq": 2},
                                               model={"ngf": 4}, sampling={"n_samples": 4, "n_steps_each": 2}))
    run = tmp_path / "run"
    assert cli.main(["--config", str(cfg_file), "--run", str(run), "--doc", "c"]) == 0
    overlay = write_config({"compute": {"compile": True}}, name="compile.yml")
    assert cli.main(["--test", "--run", str(run), "--doc", "c", "--config", str(overlay), "-o",
                     str(tmp_path / "out")]) == 0
    samples = torch.load(tmp_path / "out" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()
    assert any((run / "cache" / "inductor").rglob("*")), "no compiled kernels cached"


def test_benchmark_runs_and_reports_ratios_to_the_faithful_path(tmp_path, monkeypatch):
    """benchmarks/bench.py --quick on the digits config: the faithful row first (ratio 1), the defaults beside it,
    FLOP rates below the measured peak (the faster of a matrix product and a convolution; within timing noise), and
    a JSON a reader can check."""
    import json
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["bench.py", "--settings", "digits", "--quick", "--reps", "1",
                                      "--json", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if r["what"].startswith("train step")]
    assert rows[0]["variant"].startswith("faithful") and rows[0]["speedup"] == 1.0
    assert any(r["variant"] == "shipped defaults" for r in rows)
    peak, kernels = result["peak_gflops"]["fp32"], result["peak_kernels_gflops"]["fp32"]
    assert peak == max(kernels["matmul"], kernels["conv3x3"]) > 0
    assert all(0 < r["gflops"] < 1.5 * peak for r in rows)
    assert all(r["tf32"] == {"matmul": False, "conv": False} for r in result["rows"])      # a CPU has no TF32
    # --ablate: one row per speed option, and every boolean compute switch but compile is one of them
    labels = [label for label, *_ in bench.variants(torch.device("cpu"), False, ablate=True)]
    assert [f"shipped defaults without {key}" for key in bench.SPEED_OPTIONS] == labels[-len(bench.SPEED_OPTIONS):]
    switches = {f.name for f in dataclasses.fields(FAST) if f.type in (bool, "bool") and f.name != "compile"}
    assert set(bench.SPEED_OPTIONS) == switches


def test_benchmark_states_tf32_and_measures_each_row_against_its_own_peak(monkeypatch):
    """On CUDA (Ampere and newer) torch runs float32 convolutions in TF32 by default: the faithful row must switch it
    off, a TF32 row is measured on its own, and "% of peak" uses the peak of the row's arithmetic."""
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(bench, "native_bf16", lambda device: True)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    seen = {}
    try:
        for label, _, amp, tf32 in bench.variants(cuda, compile_too=True):
            bench.set_tf32(cuda, tf32)
            seen[label] = (amp, bench.tf32_state(cuda))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert seen["faithful fp32 (official ops, NCHW, eager)"] == ("none", {"matmul": False, "conv": False})
    assert seen["fp32 + TF32 (convolutions and matmuls), defaults"] == ("none", {"matmul": True, "conv": True})
    assert seen["shipped defaults"][1] == {"matmul": False, "conv": True}      # torch's default, stated
    peaks = {"fp32": 50e3, "tf32": 400e3, "bf16": 800e3}
    assert bench.peak_for(peaks, "none", {"matmul": False, "conv": False}) == 50e3
    assert bench.peak_for(peaks, "none", {"matmul": False, "conv": True}) == 400e3
    assert bench.peak_for(peaks, "bf16", {"matmul": False, "conv": True}) == 800e3
    assert bench.peak_for({"fp32": 1.0, "bf16": 2.0}, "none", bench.tf32_state(torch.device("cpu"))) == 1.0


def test_fast_elu_and_pool_are_torch_s_to_rounding_and_differentiate_twice():
    """The ELU from exp and the CRP pool as a convolution of ones (compute.fast_elu, compute.pool_as_conv) give
    F.elu and F.avg_pool2d(5, 1, 2) to float64 rounding, values and gradients, and stay twice differentiable (sliced
    score matching takes a gradient of an input gradient); in bfloat16 the ELU rounds like F.elu (its exponential
    is taken in float32)."""
    from models.layers import ELU, AvgPool5
    elu, pool = ELU(), AvgPool5()
    elu.fast, pool.as_conv = True, True
    x = (3 * torch.randn(3, 5, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    for fast, ref in ((elu, torch.nn.functional.elu), (pool, lambda t: torch.nn.functional.avg_pool2d(t, 5, 1, 2))):
        out, expected = fast(x), ref(x)
        assert (out - expected).abs().max().item() < 1e-15
        g = torch.randn_like(out)
        (grad,), (grad_ref,) = torch.autograd.grad(out, x, g), torch.autograd.grad(expected, x, g)
        assert (grad - grad_ref).abs().max().item() < 1e-15
        small = x[:1, :2, :6, :6].detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(fast, (small,)) and torch.autograd.gradgradcheck(fast, (small,))
    xb = (3 * torch.randn(100_000, generator=torch.Generator().manual_seed(1))).bfloat16()
    assert torch.equal(elu(xb), torch.nn.functional.elu(xb))


def test_one_pass_half_precision_statistics_hold_for_large_means():
    """The bf16 fused norm's one-pass variance (E[x^2] - mu^2 in float32) against the two-pass float64 variance of
    the same bf16 values: within 1e-4 (relative) even where the channel mean is 30 standard deviations; its mean
    is the float64 mean to 1e-6."""
    from models.normalization import spatial_mean_and_variance
    gen = torch.Generator().manual_seed(0)
    for shift in (0.0, 30.0):
        x = (shift + torch.randn(4, 8, 16, 16, generator=gen)).bfloat16().contiguous(memory_format=torch.channels_last)
        mu, var = spatial_mean_and_variance(x)
        mu64, var64 = spatial_mean_and_variance(x.double())
        assert mu.dtype == var.dtype == torch.float32
        assert ((var - var64) / var64).abs().max().item() < 1e-4
        assert ((mu - mu64).abs() / mu64.abs().clamp(min=1)).max().item() < 1e-6
