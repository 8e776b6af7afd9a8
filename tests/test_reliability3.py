"""Reliability III: the statistics cache, the ODE solver's bounds, torchrun's variables, the inductor cache,
tools/noise_rules.py's inputs and tensorboardX on a full disk, each as a user meets it."""
import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_digits_config, write_yaml


def _python(code, cwd, env=None, timeout=300):
    """Run ``code`` (a script) in a fresh interpreter from ``cwd`` with the repository importable."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# ---- item 8: tensorboardX on a full disk ----------------------------------------------------------------------

def test_full_disk_mid_training_is_one_error_line_without_tensorboardx_tracebacks(tmp_path):
    """The event file's writes fail with ENOSPC from the 4th record on (the disk fills up mid-training): the run
    stops with one error line naming the tensorboard log, exit 1, and neither tensorboardX's writer thread nor its
    atexit handler prints a traceback afterwards (and training does not hang on the writer's full queue)."""
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config(training={"n_iters": 30, "snapshot_freq": 30}))
    code = f"""
        import errno, os, sys
        import tensorboardX.record_writer as rw
        original, calls = rw.RecordWriter.write, [0]
        def write(self, data):
            calls[0] += 1
            if calls[0] > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(self, data)
        rw.RecordWriter.write = write
        import main
        sys.exit(main.main(["--config", {cfg!r}, "--run", "run", "--doc", "d"]))
    """
    r = _python(code, tmp_path, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(errors) == 1 and "tensorboard" in errors[0] and "No space left" in errors[0], r.stderr[-3000:]


# ---- item 3: the statistics cache ------------------------------------------------------------------------------

def _refuse_writes_under(monkeypatch, folder, error=errno.EROFS):
    """Writes (open for writing, mkdir) under ``folder`` fail with ``error``, as on a read-only or full disk (as
    root, chmod does not stop writes)."""
    import builtins
    real_open, real_mkdir = builtins.open, os.mkdir
    folder = Path(folder).resolve()

    def inside(path):
        return folder == Path(path).resolve() or folder in Path(path).resolve().parents

    def refusing_open(path, mode="r", *a, **k):
        if isinstance(path, (str, os.PathLike)) and any(c in mode for c in "wax+") and inside(path):
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, mode, *a, **k)

    def refusing_mkdir(path, *a, **k):
        if inside(path):
            raise OSError(error, os.strerror(error), str(path))
        return real_mkdir(path, *a, **k)
    monkeypatch.setattr(builtins, "open", refusing_open)
    monkeypatch.setattr(os, "mkdir", refusing_mkdir)


def _stats(images, cache, source="RANDOM/test"):
    from test_evaluation_metrics import StandIn

    from evaluation import reference_statistics
    return reference_statistics(images, StandIn(), cache, source=source)


def _cache_warnings(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_read_only_cache_folder_with_a_stale_cache_computes_without_caching(tmp_path, monkeypatch, caplog):
    from test_evaluation_metrics import rand_images
    cache = tmp_path / "fid_stats" / "RANDOM-test-standin-v1.npz"
    old = _stats(rand_images(20, seed=1), cache)
    before = cache.read_bytes()
    _refuse_writes_under(monkeypatch, cache.parent)
    with caplog.at_level(logging.INFO):
        new = _stats(rand_images(30, seed=2), cache)
    assert not new["cached"] and new["meta"]["n"] == 30 and not np.allclose(new["mu"], old["mu"])
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(cache) in message and "Read-only file system" in message and "without caching" in message
    assert cache.read_bytes() == before and os.listdir(cache.parent) == [cache.name]


def test_a_read_only_data_root_computes_without_caching(tmp_path, monkeypatch, caplog):
    from test_evaluation_metrics import rand_images
    root = tmp_path / "data"
    root.mkdir()
    _refuse_writes_under(monkeypatch, root)
    with caplog.at_level(logging.INFO):
        out = _stats(rand_images(20), root / "fid_stats" / "x.npz")
    assert not out["cached"] and out["sigma"].shape == (16, 16)
    assert len(_cache_warnings(caplog)) == 1 and "Read-only file system" in caplog.text
    assert os.listdir(root) == []


def test_a_cache_path_that_is_a_folder_computes_without_caching(tmp_path, caplog):
    from test_evaluation_metrics import rand_images
    cache = tmp_path / "fid_stats" / "x.npz"
    cache.mkdir(parents=True)
    with caplog.at_level(logging.INFO):
        out = _stats(rand_images(20), cache)
    assert not out["cached"] and cache.is_dir() and os.listdir(cache) == []
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and "is a folder" in warnings[0].getMessage()


def test_a_cache_on_a_full_disk_computes_without_caching_and_leaves_no_file(tmp_path, full_disk, caplog):
    from test_evaluation_metrics import rand_images
    cache = tmp_path / "fid_stats" / "x.npz"
    cache.parent.mkdir()
    full_disk(lambda path: path.parent == cache.parent)
    with caplog.at_level(logging.INFO):
        out = _stats(rand_images(20), cache)
    assert not out["cached"]
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert os.listdir(cache.parent) == []                  # neither a 0-byte cache nor a temporary file


@pytest.mark.parametrize("damage, why", [
    ("meta", "its meta is not JSON"),
    ("shapes", "arrays of shapes mu (16,), sigma (3, 3)"),
    ("objects", "an array of Python objects"),
    ("missing", "no features"),
    ("garbage", "not an .npz archive"),
])
def test_a_damaged_cache_is_named_in_one_line_with_what_to_do(tmp_path, damage, why):
    from test_evaluation_metrics import rand_images

    from errors import UserError
    cache = tmp_path / "x.npz"
    good = _stats(rand_images(20), cache)
    arrays = {"mu": good["mu"], "sigma": good["sigma"], "features": good["features"],
              "meta": np.array(json.dumps(good["meta"]))}
    if damage == "meta":
        arrays["meta"] = np.array("{not json")
    elif damage == "shapes":
        arrays["sigma"] = np.eye(3)
    elif damage == "objects":
        arrays["mu"] = np.array([{}, 1], dtype=object)
    elif damage == "missing":
        del arrays["features"]
    if damage == "garbage":
        cache.write_bytes(b"\x80\x04garbage")
    else:
        with open(cache, "wb") as f:
            np.savez(f, **arrays)
    with pytest.raises(UserError) as e:
        _stats(rand_images(20), cache)
    message = str(e.value)
    assert message == f"statistics cache {cache} is damaged ({why}" + message[len(f"statistics cache {cache} is "
                                                                                  f"damaged ({why}"):]
    assert message.endswith("; delete it, and it is computed again") and "\n" not in message
    assert "allow_pickle" not in message and "pickle" not in message


def test_the_cache_is_written_with_the_usual_mode_and_stale_temporary_files_are_removed(tmp_path):
    from test_evaluation_metrics import rand_images
    folder = tmp_path / "fid_stats"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".other.npz.tmp{int(dead.stdout)}"       # a killed run's 34 MB statistics, say
    stale.write_bytes(b"\0" * 1000)
    mine = folder / f".mine.npz.tmp{os.getpid()}"              # a live process's: kept
    mine.write_bytes(b"")
    old = os.umask(0o002)
    try:
        _stats(rand_images(20), folder / "x.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / "x.npz").stat().st_mode) == 0o664     # as open() gives, not a temp file's 0600
    assert not stale.exists() and mine.exists()


def test_the_checkpoint_temporary_files_use_the_same_cleanup(tmp_path):
    """training/resume.py's cleanup is atomic.py's, for checkpoint names only."""
    from training.resume import remove_stale_temp_files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ckpt, other = tmp_path / f".checkpoint.pth.tmp{int(dead.stdout)}", tmp_path / f".x.npz.tmp{int(dead.stdout)}"
    ckpt.write_bytes(b"1")
    other.write_bytes(b"1")
    assert remove_stale_temp_files(tmp_path) == [ckpt] and other.exists()


def test_eval_reference_data_is_checked_before_drawing_with_data_root_in_the_hint(tmp_path):
    from configs import config_from_dict
    from errors import UserError
    from evaluation.reference import check_reference_data
    config = config_from_dict({"data": {"dataset": "MNIST", "root": str(tmp_path / "nothing"), "download": False}})
    with pytest.raises(UserError) as e:
        check_reference_data(config, tmp_path / "run")
    message = str(e.value)
    assert message.startswith("the reference data of --eval is missing: MNIST data not available under ")
    assert message.endswith("(--eval's --config may set data.root)") and "\n" not in message
    check_reference_data(config_from_dict({"data": {"dataset": "DIGITS", "image_size": 8}}), tmp_path / "run")


def test_data_root_is_accepted_in_an_overlay_and_nothing_else_of_data(tmp_path):
    from configs import config_from_dict, overlay_config
    from errors import ConfigError
    run_config = config_from_dict({"data": {"dataset": "MNIST"}})
    (tmp_path / "o.yml").write_text("data: {root: /elsewhere}\neval: {n_samples: 4}\n")
    moved = overlay_config(run_config, tmp_path / "o.yml")
    assert moved.data.root == "/elsewhere" and moved.data.dataset == "MNIST" and moved.eval.n_samples == 4
    (tmp_path / "bad.yml").write_text("data: {root: /elsewhere, dataset: CIFAR10}\n")
    with pytest.raises(ConfigError, match=r"may set only sampling, eval, compute and data\.root .* it sets "
                                          r"data\.dataset$"):
        overlay_config(run_config, tmp_path / "bad.yml")


# ---- item 4: the ODE solver's bounds ----------------------------------------------------------------------------

@pytest.mark.parametrize("section, key", [("sampling", "ode_rtol"), ("sampling", "ode_atol"), ("eval", "bpd_rtol"),
                                          ("eval", "bpd_atol")])
def test_tiny_ode_tolerances_are_refused_in_one_line_naming_the_key(section, key):
    from configs import config_from_dict
    from errors import ConfigError
    with pytest.raises(ConfigError) as e:
        config_from_dict({section: {key: 1e-30}})
    assert str(e.value).startswith(f"{section}.{key} must be at least 1e-08") and "\n" not in str(e.value)
    assert getattr(getattr(config_from_dict({section: {key: 1e-8}}), section), key) == 1e-8


def test_the_smallest_tolerance_is_met_in_float32_and_float64():
    """At the bound 1e-8 the exact Gaussian likelihood solves in float32 too (measured: 170 evaluations, error
    2e-5 nats; float64: 152, 2e-7): the bound refuses only what cannot work."""
    import math

    import torch
    from test_likelihood import MU, SIGMA_MAX, SIGMA_MIN, S, exact_prior, exact_score

    from evaluation.likelihood import gaussian_log_density, ode_log_likelihood
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = (MU + 0.3 * torch.randn(16, 2, 2, 2)).to(dtype)
        logp, nfe = ode_log_likelihood(exact_score, x, SIGMA_MIN, SIGMA_MAX, exact_prior, rtol=1e-8, atol=1e-8)
        exact = gaussian_log_density(x, MU, math.sqrt(S ** 2 + SIGMA_MIN ** 2))
        assert (logp - exact).abs().max().item() < 1e-3 and nfe < 1000


def test_likelihood_evaluations_are_bounded_reported_and_counted_by_the_callback():
    import torch
    from test_likelihood import MU, SIGMA_MAX, SIGMA_MIN, exact_prior, exact_score

    from errors import UserError
    from evaluation.likelihood import ode_log_likelihood
    x = MU + 0.3 * torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    seen = []
    _, nfe = ode_log_likelihood(exact_score, x, SIGMA_MIN, SIGMA_MAX, exact_prior, callback=seen.append)
    assert seen == list(range(1, nfe + 1))
    with pytest.raises(UserError) as e:
        ode_log_likelihood(exact_score, x, SIGMA_MIN, SIGMA_MAX, exact_prior, max_nfe=10)
    assert "used its 10 network evaluations (eval.bpd_max_nfe) before reaching sigma_1 = 1; raise " \
           "eval.bpd_max_nfe" in str(e.value)
    with pytest.raises(UserError, match=r"underflow in dt.*loosen eval\.bpd_rtol / eval\.bpd_atol$"):
        ode_log_likelihood(exact_score, x.float(), SIGMA_MIN, SIGMA_MAX, exact_prior, rtol=1e-30, atol=1e-30)


def test_ode_sampler_evaluations_are_bounded_with_one_line_naming_the_key():
    import torch

    from errors import UserError
    from sampling import geometric_sigmas, ode_sampler
    sigmas = geometric_sigmas(1.0, 0.05, 4)

    def score(x, labels):
        return -(x - 0.5) / (0.04 + sigmas[labels].view(-1, 1, 1, 1) ** 2)
    x = 0.5 + torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(ode_sampler(score, x, sigmas)).all()
    with pytest.raises(UserError, match=r"used its 5 network evaluations \(sampling\.ode_max_nfe\) before reaching "
                                        r"sigma_L = 0\.05; raise sampling\.ode_max_nfe"):
        ode_sampler(score, x, sigmas, max_nfe=5)


def test_the_nfe_defaults_agree():
    from configs import config_from_dict
    from configs.schema import DEFAULT_MAX_NFE
    from sampling.ode import DEFAULT_MAX_NFE as SOLVER_DEFAULT
    cfg = config_from_dict({})
    assert cfg.sampling.ode_max_nfe == cfg.eval.bpd_max_nfe == DEFAULT_MAX_NFE == SOLVER_DEFAULT


# ---- item 5: torchrun's variables and the rendezvous ------------------------------------------------------------

TORCHRUN = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize("change, message", [
    ({"RANK": None}, "WORLD_SIZE=2 but RANK is not set: start the processes with torchrun"),
    ({"RANK": None, "MASTER_ADDR": None, "MASTER_PORT": None},
     "WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"LOCAL_RANK": "-1"}, "environment variable LOCAL_RANK must be an integer in [0, 1], got '-1'"),
    ({"RANK": "2"}, "environment variable RANK must be an integer in [0, 1], got '2'"),
    ({"MASTER_PORT": "http"}, "environment variable MASTER_PORT must be an integer in [1, 65535]"),
])
def test_torchrun_variables_are_checked_together_before_any_init(monkeypatch, change, message):
    import torch
    import torch.distributed as dist

    from errors import UserError
    from training.distributed import init_distributed
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append(a))
    for name, value in {**TORCHRUN, **change}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as e:
        init_distributed(torch.device("cpu"))
    assert message in str(e.value) and "\n" not in str(e.value) and calls == []


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_rendezvous_wait_with_the_usual_exit_code(tmp_path, signum):
    """Rank 1 of 2 with no rank 0 to meet: the wait ends on SIGTERM / SIGINT within seconds, with 128 + signum."""
    import time
    cfg = write_yaml(tmp_path / "tiny.yml", tiny_digits_config())
    env = {**os.environ, **TORCHRUN, "MASTER_PORT": str(_free_port()), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", cfg, "--doc", "d"], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)                                           # imports done, waiting for rank 0
        assert p.poll() is None, p.communicate()
        p.send_signal(signum)
        _, err = p.communicate(timeout=60)      # a hang would last the rendezvous timeout (minutes)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


# ---- item 6: the inductor cache ---------------------------------------------------------------------------------

def test_compile_caches_under_the_run_although_torch_set_the_variable_at_import(tmp_path):
    """torchvision imports torch._dynamo, which sets TORCHINDUCTOR_CACHE_DIR to torch's default: maybe_compile still
    points inductor at <run>/cache/inductor (torch.compile is lazy: nothing compiles here)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    code = f"""
        import os, torch, torchvision
        assert os.environ.get("TORCHINDUCTOR_CACHE_DIR"), "torch no longer sets it at import"
        from configs.schema import Compute
        from compute.precision import maybe_compile
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        maybe_compile(torch.nn.Linear(2, 2), Compute(compile=True), cache_root={str(tmp_path / "cache")!r})
        print(cache_dir())
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**env, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(tmp_path / "cache" / "inductor")


def test_an_unwritable_inductor_cache_is_one_line(tmp_path, monkeypatch):
    import torch

    from compute.precision import maybe_compile
    from configs.schema import Compute
    from errors import UserError
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "file" / "sub"))
    with pytest.raises(UserError, match=r"^torch\.compile's kernel cache .*file/sub \(TORCHINDUCTOR_CACHE_DIR\) is "
                                        r"not a writable folder: Not a directory; unset"):
        maybe_compile(torch.nn.Linear(2, 2), Compute(compile=True), cache_root=tmp_path / "cache")


def test_an_unwritable_inductor_cache_is_one_line_for_every_command(tmp_path):
    """The folder is created when torchvision is imported (it imports torch._dynamo): main.py asks first."""
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, str(REPO / "main.py"), "--doc", "x", "--run", str(tmp_path / "run")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "file" / "sub")})
    assert r.returncode == 1 and r.stderr.strip() == (
        f"error: torch.compile's kernel cache {tmp_path / 'file' / 'sub'} (TORCHINDUCTOR_CACHE_DIR) is not a "
        f"writable folder: Not a directory; unset TORCHINDUCTOR_CACHE_DIR or point it at a writable folder"), r.stderr
    assert not (tmp_path / "run").exists()
