"""The numerics of the GPU-oriented paths, checked on the CPU: InstanceNorm++ keeps a channels-last layout and the
input's dtype (bf16 in, bf16 out under autocast), its statistics do not overflow in float16, ``training.amp: auto``
takes bf16 only on GPUs that compute it natively (torch.cuda mocked), and ``compute.compile`` is refused for sliced
score matching training (double backward) but not for sampling an SSM-trained run."""
import functools

import pytest
import torch
from conftest import main_in_process, tiny_digits_config, write_yaml
from test_models import rel_err

from compute.precision import resolve_amp
from configs import check_training, config_from_dict, load_config
from errors import ConfigError
from models import CondRefineNetDilated
from models.normalization import (
    ConditionalInstanceNorm2dPlus,
    InstanceNorm2dPlus,
    _instance_norm_plus,
    _instance_norm_plus_fused,
)


def _factors(batch, features, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    gamma = 1 + 0.1 * torch.randn(batch, features, generator=g, dtype=dtype)
    alpha = 1 + 0.1 * torch.randn(batch, features, generator=g, dtype=dtype)
    beta = 0.1 * torch.randn(batch, features, generator=g, dtype=dtype)
    return gamma, alpha, beta


# 1. channels-last ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_channels_last_instance_norm_plus_stays_channels_last_and_matches_nchw(dtype, tol):
    g = torch.Generator().manual_seed(1)
    x_nchw = (3 * torch.randn(3, 8, 5, 6, generator=g, dtype=dtype) + 2).requires_grad_(True)
    x_cl = x_nchw.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert not x_cl.is_contiguous()
    params = [p.requires_grad_(True) for p in _factors(3, 8, dtype)]
    weight = torch.randn(3, 8, 5, 6, generator=g, dtype=dtype)        # a loss that weights every output

    def run(x):         # the upstream gradient in x's layout, as in a channels-last network
        out = _instance_norm_plus(x, *params)
        upstream = weight.contiguous(memory_format=torch.channels_last) if x is x_cl else weight
        grads = torch.autograd.grad((out * upstream).sum(), [x, *params])
        return out, grads

    ref, ref_grads = run(x_nchw)
    out, grads = run(x_cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tol
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < tol
    assert grads[0].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_norm_modules_in_training_keep_the_layout():
    """The modules as a training network calls them (gradients on, so the official form, not the fused one)."""
    torch.manual_seed(0)
    cond, plain = ConditionalInstanceNorm2dPlus(6, 4), InstanceNorm2dPlus(6)
    x = torch.randn(4, 6, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = torch.arange(4)
    for out, ref in ((cond(x, y), cond(x.contiguous(), y)), (plain(x), plain(x.contiguous()))):
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(out, ref) < 2e-6


# 2. autocast keeps bf16 ------------------------------------------------------------------------------------------

def _norm_output_dtypes(model, run):
    """The output dtypes of every InstanceNorm++ module during ``run()``, and run's result."""
    dtypes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
             for m in model.modules() if isinstance(m, (ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus))]
    try:
        result = run()
    finally:
        for h in hooks:
            h.remove()
    return dtypes, result


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_under_bf16_autocast_every_norm_of_the_network_outputs_bf16(fused):
    torch.manual_seed(0)
    model = CondRefineNetDilated(channels=1, image_size=8, ngf=8, num_classes=4)
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = fused
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 4
    with torch.no_grad():
        ref = model(x, y)
    with torch.set_grad_enabled(not fused), torch.autocast("cpu", dtype=torch.bfloat16):
        dtypes, out = _norm_output_dtypes(model, lambda: model(x, y))
    assert len(dtypes) > 10 and set(dtypes) == {torch.bfloat16}
    assert ref.dtype == torch.float32 and torch.isfinite(out).all()
    assert rel_err(out.float(), ref) < 0.05


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", [_instance_norm_plus, _instance_norm_plus_fused], ids=["reference", "fused"])
def test_half_precision_input_gives_output_of_its_dtype_with_float32_factors(fn, dtype):
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert fn(x, *_factors(2, 8, torch.float32)).dtype == dtype


# 3. float16 statistics -------------------------------------------------------------------------------------------

def _large_activations(seed=3):
    """Activations of scale 400 about per-channel offsets of scale 400: |x - mu| reaches ~1600 (its float16 square
    overflows 65504) and the channel means spread by ~400 (their float16 variance overflows too).  The overflow does
    not show as inf: an infinite variance makes its rsqrt 0, and the normalised term or the channel-mean term is
    silently lost (relative errors 0.47 reference, 0.97 fused, before the statistics moved to float32)."""
    g = torch.Generator().manual_seed(seed)
    offset = 400 * torch.randn(1, 16, 1, 1, generator=g, dtype=torch.float64)
    return 400 * torch.randn(4, 16, 8, 8, generator=g, dtype=torch.float64) + offset


def _max_rel(out, ref):
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("fn", [_instance_norm_plus, _instance_norm_plus_fused], ids=["reference", "fused"])
def test_float16_statistics_do_not_overflow_at_scale_400(fn):
    x = _large_activations()
    factors = _factors(4, 16, torch.float32)
    ref = _instance_norm_plus(x, *(f.double() for f in factors))
    out = fn(x.half(), *factors)
    assert torch.isfinite(out).all() and _max_rel(out, ref) < 5e-3     # float16 statistics: 0.47 / 0.97
    assert out.dtype == torch.float16


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_float16_autocast_norm_module_at_scale_400(fused):
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2dPlus(16, 4)
    norm.fused = fused
    x, y = _large_activations(seed=4), torch.arange(4)
    with torch.no_grad():
        ref = norm.double()(x, y)
        norm.float()
        with torch.autocast("cpu", dtype=torch.float16):
            out = norm(x.half(), y)
    assert torch.isfinite(out).all() and _max_rel(out, ref) < 5e-3
    assert out.dtype == torch.float16


# 4. amp auto on CUDA -----------------------------------------------------------------------------------------------

@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as on a machine with GPUs of the given compute capabilities, each counted bf16-capable by
    is_bf16_supported (which includes emulation); records the device indices asked."""
    asked = []
    capabilities = {}

    def capability(device=None):
        asked.append(device)
        return capabilities[device]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    return capabilities, asked


def test_auto_amp_takes_bf16_only_on_gpus_of_capability_8_or_more(fake_cuda):
    capabilities, asked = fake_cuda
    cuda = torch.device("cuda")
    for cap, expected in (((7, 0), "none"), ((7, 5), "none"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        capabilities[0] = cap
        assert resolve_amp("auto", cuda, 32) == expected, cap
    assert resolve_amp("auto", cuda, 8) == "none"                # too small, whatever the GPU
    assert set(asked) == {0}                                     # the current device


def test_auto_amp_asks_the_capability_of_the_device_given(fake_cuda):
    capabilities, asked = fake_cuda
    capabilities.update({0: (8, 0), 1: (7, 0)})
    assert resolve_amp("auto", torch.device("cuda:1"), 32) == "none"
    assert resolve_amp("auto", torch.device("cuda:0"), 32) == "bf16"
    assert asked == [1, 0]


# 5. compile and sliced score matching ------------------------------------------------------------------------------

SSM_COMPILED = {"training": {"algo": "ssm"}, "compute": {"compile": True}}


def test_compile_with_ssm_loads_but_is_refused_for_training(tmp_path):
    config = load_config(write_yaml(tmp_path / "c.yml", SSM_COMPILED))    # loads: sampling may compile
    with pytest.raises(ConfigError) as info:
        check_training(config)
    message = str(info.value)
    assert "compute.compile" in message and "training.algo: ssm" in message and "double backward" in message
    assert "\n" not in message
    check_training(config_from_dict({"training": {"algo": "ssm"}}))                   # eager SSM trains
    check_training(config_from_dict({"compute": {"compile": True}}))                  # compiled DSM trains


@pytest.fixture
def compile_aot_eager(monkeypatch):
    """torch.compile with the aot_eager backend (aot_autograd without inductor: seconds, not minutes, on a CPU)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


def test_cli_refuses_compiled_ssm_training_in_one_line(tmp_path, capfd, compile_aot_eager):
    cfg = tiny_digits_config(training={"algo": "ssm", "n_iters": 1, "snapshot_freq": 1},
                             compute={"compile": True})
    run = tmp_path / "run"
    rc, err = main_in_process(capfd, "--config", write_yaml(tmp_path / "ssm.yml", cfg), "--run", run, "--doc", "s")
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("error: ") and "compute.compile" in err[0] and "training.algo: ssm" in err[0]
    assert "double backward" in err[0]
    assert not (run / "logs" / "s").exists()                     # refused before the run folder is made


def test_compiled_sampling_of_an_ssm_trained_run_is_not_refused(tmp_path, capfd, compile_aot_eager):
    cfg = tiny_digits_config(training={"algo": "ssm", "n_iters": 2, "snapshot_freq": 2, "test_freq": 100},
                             model={"ngf": 4}, sampling={"n_samples": 4, "n_steps_each": 2})
    run = tmp_path / "run"
    rc, _ = main_in_process(capfd, "--config", write_yaml(tmp_path / "ssm.yml", cfg), "--run", run, "--doc", "s")
    assert rc == 0
    overlay = write_yaml(tmp_path / "compile.yml", {"compute": {"compile": True}})
    rc, err = main_in_process(capfd, "--test", "--run", run, "--doc", "s", "--config", overlay,
                              "-o", tmp_path / "out")
    assert rc == 0, err
    samples = torch.load(tmp_path / "out" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()
