"""Speed benchmark: every compute path against the faithful eager float32 path, side by side in one run.

    python benchmarks/bench.py                                  # digits, MNIST, CIFAR-10 configs; JSON to bench.json
    python benchmarks/bench.py --settings digits --compile      # also torch.compile (minutes to compile, cached)
    python benchmarks/bench.py --device cuda --json cuda.json   # on a GPU (adds CUDA graphs with --compile)
    python benchmarks/bench.py --settings cifar10 --sample-batch 500 --export 50000   # + a 50k-sample export, projected

For each config it measures a training step (annealed DSM + Adam) and an annealed Langevin step: milliseconds
(median, min and max over the repetitions), images per second, achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter) against the machine's measured peak (the faster of a large matrix product and a large
3x3 convolution), and peak memory; a full annealed chain (10 levels x 100 steps) for the digits config and projected
from the step time for the larger ones; and how the time grows with the batch size and with the number of levels
and steps.  Ratios are to the faithful path (float32, eager, NCHW, the official order of operations), which is what
the official code computes.

TF32 (CUDA, Ampere and newer): torch's defaults run float32 convolutions in TF32 but float32 matrix products in full
float32.  The benchmark sets both switches explicitly for every row and records them (``tf32`` in the JSON): the
faithful row is true float32 (TF32 off for both), the float32 peak is measured with TF32 off, a TF32 row and
peak are added on CUDA, and each row's "% of peak" is against the peak of the arithmetic it runs (bf16, TF32 or
float32).

The network, objective, precision and step are built by the runners' own functions (AnnealRunner.build_model,
compute.precision.prepare_model / score_function / resolve_amp, ncsn_objective, training.loop.forward_loss and
update, sampling.anneal_langevin_dynamics), so a speed option is wired once.  The speed numbers of docs/speed.md come from here.
"""
import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.precision import (  # noqa: E402
    FAITHFUL,
    maybe_compile,
    native_bf16,
    prepare_model,
    resolve_amp,
    score_function,
    to_layout,
)
from configs import config_from_dict  # noqa: E402
from runners.anneal_runner import AnnealRunner, make_sigmas, ncsn_objective  # noqa: E402
from sampling import anneal_langevin_dynamics  # noqa: E402
from training.loop import forward_loss, update  # noqa: E402
from training.setup import make_optimizer  # noqa: E402

SETTINGS = {   # name: (channels, image_size, ngf, train batch on CUDA, on CPU, sampling batch)
    "digits": (1, 8, 32, 128, 128, 36),
    "mnist": (1, 28, 64, 128, 32, 25),
    "cifar10": (3, 32, 128, 128, 8, 8),
}


TORCH_DEFAULT_TF32 = "torch default"     # TF32 for cuDNN convolutions, not for float32 matrix products


def set_tf32(device, mode):
    """TF32 for float32 work on CUDA: True (matrix products and cuDNN convolutions), False (neither: true float32) or
    TORCH_DEFAULT_TF32 (convolutions only).  A no-op on a CPU, which has no TF32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = mode is True
        torch.backends.cudnn.allow_tf32 = mode is True or mode == TORCH_DEFAULT_TF32


def tf32_state(device):
    """What TF32 does for this row: {"matmul": bool, "conv": bool} (both False on a CPU, which has no TF32)."""
    if device.type != "cuda":
        return {"matmul": False, "conv": False}
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "conv": bool(torch.backends.cudnn.allow_tf32)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:       # Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, device, warmup, reps):
    """Run ``fn`` warmup + reps times; seconds of each timed run, and the peak memory during them.  The first warm-up
    call's seconds (where torch.compile compiles) are kept in ``timed.first_call``."""
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        sync(device)
        if i == 0:
            timed.first_call = time.perf_counter() - start
    reset_peak(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times, peak_mib(device)


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def arithmetic_peak(device, dtype, small=False, reps=5):
    """GFLOP/s of the faster of the machine's two kernels for ``dtype``, each at its best run: an n x n matrix
    product (BLAS) and a channels-last 3x3 convolution (the kernel library the network runs on).  Both are needed:
    on AMD CPUs MKL's float32 product reaches less than half of what oneDNN's float32 convolutions do (Zen 5: about
    195 against 460 GFLOP/s), so a product-only peak would put the network above 100 % of it.  ``small``: one
    small size of each, for arithmetic a device only emulates (minutes at full size).  Returns ``(best, {kernel:
    GFLOP/s})``."""
    sizes, (batch, channels) = ((256,), (1, 64)) if small else ((1024, 2048, 3072), (4, 256))
    rates = {"matmul": 0.0}
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        times, _ = timed(lambda a=a, b=b: a @ b, device, warmup=1, reps=reps)
        rates["matmul"] = max(rates["matmul"], 2 * n ** 3 / min(times) / 1e9)
    x = torch.randn(batch, channels, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    times, _ = timed(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, warmup=1, reps=reps)
    rates["conv3x3"] = 2 * batch * channels ** 2 * 9 * 32 * 32 / min(times) / 1e9
    return max(rates.values()), rates


def setting_config(name, batch, compute, amp):
    """The official NCSN config (anneal.yml defaults) at this setting's data shape and width, with ``compute``."""
    c, size, ngf = SETTINGS[name][:3]
    return config_from_dict({"data": {"dataset": "MNIST", "channels": c, "image_size": size},
                             "model": {"ngf": ngf}, "training": {"batch_size": batch, "amp": amp},
                             "sampling": {"amp": amp}, "compute": compute})


def build(config, device, training=False):
    """The network as Runner.new_model / trained_model build it (layout, kernels, compilation of ``compute``)."""
    torch.manual_seed(0)
    model = prepare_model(AnnealRunner.build_model(config).to(device), config.compute, training=training)
    return model, maybe_compile(model, config.compute)


def train_step_fn(config, device):
    model, net = build(config, device, training=True)
    opt = make_optimizer(model.parameters(), config.optim)
    objective = ncsn_objective(config, make_sigmas(config, device))
    d = config.data
    x = torch.rand(config.training.batch_size, d.channels, d.image_size, d.image_size, device=device)
    amp = resolve_amp(config.training.amp, device, d.image_size)

    def step():
        loss, _, _ = forward_loss(net, objective.loss_fn, x, amp)
        update(opt, loss)
    return step


def sample_fn(config, device, n, n_levels=1, n_steps=1):
    """A closure running ``n_levels`` x ``n_steps`` annealed Langevin steps on n images, as --test does."""
    model, net = build(config, device)
    net.eval()
    d = config.data
    score = score_function(net, device, config.sampling.amp, config.compute, d.image_size)
    sigmas = make_sigmas(config, device, dtype=torch.float64)[:n_levels]
    x = to_layout(torch.rand(n, d.channels, d.image_size, d.image_size, device=device), config.compute)
    return lambda: anneal_langevin_dynamics(score, x, sigmas, n_steps_each=n_steps)


def summary(times, n_images, flops, peak_gflops, mem):
    med = statistics.median(times)
    return {"ms": med * 1000, "ms_min": min(times) * 1000, "ms_max": max(times) * 1000, "images_per_s": n_images / med,
            "gflops": flops / med / 1e9 if flops else None,
            "peak_fraction": flops / med / 1e9 / peak_gflops if flops else None, "peak_mib": mem}


SPEED_OPTIONS = ("channels_last", "fused_norm", "fast_elu", "pool_as_conv")   # the compute switches --ablate turns off


def variants(device, compile_too, ablate=False):
    """(label, compute overrides, amp, tf32) of every path measured; the first is the faithful reference (true
    float32: TF32 off).  The others run with TF32 as torch's defaults leave it on CUDA (convolutions on, matrix
    products off), except the explicit TF32 row.  ``ablate``: also the shipped defaults with each speed option of
    SPEED_OPTIONS off in turn, so that what each one buys is measured side by side."""
    default_tf32 = TORCH_DEFAULT_TF32
    out = [("faithful fp32 (official ops, NCHW, eager)", FAITHFUL, "none", False),
           ("shipped defaults", {}, "auto", default_tf32)]
    if device.type == "cuda":
        out.append(("fp32 + TF32 (convolutions and matmuls), defaults", {}, "none", True))
    if native_bf16(device):
        out.append(("bf16 autocast + defaults", {}, "bf16", default_tf32))
        if device.type == "cpu":     # 'auto' is bf16 here: the float32 fast path measured on its own
            out.append(("fp32 + defaults (no autocast)", {}, "none", default_tf32))
    if compile_too:
        out.append(("torch.compile + defaults", {"compile": True}, "auto", default_tf32))
        if device.type == "cuda":
            out.append(("torch.compile CUDA graphs + defaults",
                        {"compile": True, "compile_mode": "reduce-overhead"}, "auto", default_tf32))
    if ablate:
        out += [(f"shipped defaults without {key}", {key: False}, "auto", default_tf32) for key in SPEED_OPTIONS]
    return out


def peak_for(peaks, amp, tf32):
    """The peak of the arithmetic a row runs: bf16, TF32 (CUDA convolutions with TF32 on) or float32."""
    if amp == "bf16":
        return peaks["bf16"]
    if amp == "fp16":
        return peaks.get("fp16", peaks["bf16"])
    return peaks["tf32"] if tf32["conv"] and "tf32" in peaks else peaks["fp32"]


def bench_setting(name, device, args, peaks):
    c, size, ngf, cuda_batch, cpu_batch, n_sample = SETTINGS[name]
    n_sample = args.sample_batch or n_sample
    batch = args.batch or (cuda_batch if device.type == "cuda" else cpu_batch)
    reps = args.reps or (20 if device.type == "cuda" else 5)
    rows, base = [], {}
    ref_cfg = setting_config(name, batch, FAITHFUL, "none")
    train_flops = count_flops(train_step_fn(ref_cfg, device))
    sample_flops = count_flops(sample_fn(ref_cfg, device, n_sample))
    for label, compute, amp, tf32 in variants(device, args.compile, args.ablate):
        set_tf32(device, tf32)
        cfg = setting_config(name, batch, compute, amp)
        resolved = resolve_amp(amp, device, size)
        state = tf32_state(device)
        peak = peak_for(peaks, resolved, state)
        for what, fn, n_img, flops, warm in (
                (f"train step (batch {batch})", train_step_fn(cfg, device), batch, train_flops, 2),
                (f"Langevin step ({n_sample} images)", sample_fn(cfg, device, n_sample), n_sample, sample_flops, 3)):
            times, mem = timed(fn, device, warmup=warm, reps=reps)
            row = {"setting": name, "what": what, "variant": label, "amp": resolved, "tf32": state,
                   "compute": dataclasses.asdict(cfg.compute), **summary(times, n_img, flops, peak, mem),
                   "first_call_s": timed.first_call}
            base.setdefault(what, row["ms"])
            row["speedup"] = base[what] / row["ms"]
            rows.append(row)
            print(_line(row), flush=True)
        chain = 10 * 100    # levels x steps of the official sampler
        step_ms = rows[-1]["ms"]
        if name == "digits" and not args.quick:
            times, _ = timed(sample_fn(cfg, device, n_sample, n_levels=10, n_steps=100), device, warmup=0, reps=1)
            rows.append({"setting": name, "what": f"full chain 10x100 ({n_sample} images)", "variant": label,
                         "amp": resolved, "tf32": state, "ms": times[0] * 1000, "images_per_s": n_sample / times[0],
                         "measured": True})
        else:
            rows.append({"setting": name, "what": f"full chain 10x100 ({n_sample} images)", "variant": label,
                         "amp": resolved, "tf32": state, "ms": step_ms * chain, "images_per_s": n_sample / (step_ms * chain / 1000),
                         "measured": False})
        base.setdefault("chain", rows[-1]["ms"])
        rows[-1]["speedup"] = base["chain"] / rows[-1]["ms"]
        print(_line(rows[-1]), flush=True)
        if args.export:     # an --eval export: ceil(N / batch) chains of 10 x 100 steps at this sampling batch
            ms = step_ms * chain * math.ceil(args.export / n_sample)
            rows.append({"setting": name, "what": f"export {args.export} samples (batch {n_sample}, 10x100)",
                         "variant": label, "amp": resolved, "tf32": state, "ms": ms,
                         "images_per_s": args.export / (ms / 1000), "hours": ms / 3.6e6, "measured": False})
            base.setdefault("export", ms)
            rows[-1]["speedup"] = base["export"] / ms
            print(_line(rows[-1]), flush=True)
            for nfe in args.export_nfe:   # a Karras-schedule sampler (sampling.nfe): nfe network passes per sample
                ms = step_ms * nfe * math.ceil(args.export / n_sample)
                rows.append({"setting": name, "what": f"export {args.export} samples (batch {n_sample}, {nfe} NFE)",
                             "variant": label, "amp": resolved, "tf32": state, "ms": ms,
                             "images_per_s": args.export / (ms / 1000), "hours": ms / 3.6e6, "measured": False})
                rows[-1]["speedup"] = base["export"] / ms
                print(_line(rows[-1]), flush=True)
    set_tf32(device, False)
    return rows


def scaling(device, args):
    """digits: Langevin images/s against the batch size, and chain time against levels x steps, both paths."""
    out = []
    for label, compute, amp, tf32 in variants(device, False):
        set_tf32(device, tf32)
        cfg = setting_config("digits", 128, compute, amp)
        for n in (1, 8, 32, 128, 512):
            times, _ = timed(sample_fn(cfg, device, n), device, warmup=2, reps=3)
            out.append({"variant": label, "kind": "batch", "n": n, "ms": statistics.median(times) * 1000,
                        "images_per_s": n / statistics.median(times)})
            print(out[-1], flush=True)
        for levels, steps in ((2, 2), (4, 2), (8, 2), (8, 4)):
            times, _ = timed(sample_fn(cfg, device, 36, levels, steps), device, warmup=1, reps=3)
            ms = statistics.median(times) * 1000
            out.append({"variant": label, "kind": "chain", "levels": levels, "steps_each": steps, "ms": ms,
                        "ms_per_step": ms / (levels * steps)})
            print(out[-1], flush=True)
    return out


def _line(r):
    spread = f" [{r['ms_min']:.1f}-{r['ms_max']:.1f}]" if "ms_min" in r else (" (projected)" if not r.get("measured", True)
                                                                             else "")
    flops = f", {r['gflops']:.1f} GFLOP/s" if r.get("gflops") else ""
    mem = f", peak {r['peak_mib']:.0f} MiB" if r.get("peak_mib") else ""
    return (f"{r['setting']:8s} {r['what']:32s} {r['variant']:44s} {r['ms']:10.1f} ms{spread} "
            f"{r['images_per_s']:8.1f} img/s{flops}{mem}  x{r['speedup']:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--batch", type=int, default=None, help="training batch (default: 128 on CUDA; 128/32/8 on CPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 20 on CUDA, 5 on CPU)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (compile time not counted)")
    p.add_argument("--quick", action="store_true", help="no full chain, no scaling runs")
    p.add_argument("--ablate", action="store_true",
                   help="also the shipped defaults with each compute speed option off in turn")
    p.add_argument("--sample-batch", type=int, default=None,
                   help="images per Langevin step (default: 36 digits, 25 MNIST, 8 CIFAR-10)")
    p.add_argument("--export", type=int, default=0, metavar="N",
                   help="also project the time of an N-sample export (--eval) from the Langevin step")
    p.add_argument("--export-nfe", type=int, nargs="*", default=[], metavar="K",
                   help="with --export: also project it for a sampler of K network evaluations per sample (heun, "
                        "dpmpp_2m, euler_ancestral at sampling.nfe K), from the same step")
    p.add_argument("--json", default="bench.json")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for name, value in (("--sample-batch", args.sample_batch), ("--export", args.export)):
        if value is not None and value < 0 or (name == "--sample-batch" and value == 0):
            p.error(f"{name} must be a positive integer, got {value}")
    set_tf32(device, False)
    peaks, kernels = {}, {}
    peaks["fp32"], kernels["fp32"] = arithmetic_peak(device, torch.float32)
    if device.type == "cuda":
        set_tf32(device, True)
        peaks["tf32"], kernels["tf32"] = arithmetic_peak(device, torch.float32)
        set_tf32(device, False)
    native = native_bf16(device)            # without native bf16 a 2048^3 product takes minutes: measure a smaller one
    peaks["bf16"], kernels["bf16"] = arithmetic_peak(device, torch.bfloat16, small=not native, reps=5 if native else 2)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"device: {dev}; torch {torch.__version__}; {torch.get_num_threads()} threads; peak "
          + ", ".join(f"{k} {v:.1f} GFLOP/s (matmul {kernels[k]['matmul']:.0f}, conv {kernels[k]['conv3x3']:.0f})"
                      for k, v in peaks.items()) + f"; native bf16: {native}; TF32: "
          + ("off in the faithful row, torch's default (convolutions only) elsewhere" if device.type == "cuda"
             else "none (CPU)"), flush=True)
    rows = [r for name in args.settings for r in bench_setting(name, device, args, peaks)]
    scale = [] if args.quick or "digits" not in args.settings else scaling(device, args)
    result = {"device": dev, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "native_bf16": native, "peak_gflops": peaks, "peak_kernels_gflops": kernels,
              "rows": rows, "scaling": scale}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("\n| setting | what | variant | ms (median [min-max]) | images/s | GFLOP/s (% of peak) | peak MiB | speed-up |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        spread = f" [{r['ms_min']:.0f}-{r['ms_max']:.0f}]" if "ms_min" in r else (
            "" if r.get("measured", True) else " (projected)")
        flops = f"{r['gflops']:.0f} ({100 * r['peak_fraction']:.0f}%)" if r.get("gflops") else ""
        mem = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else ""
        print(f"| {r['setting']} | {r['what']} | {r['variant']} | {r['ms']:.1f}{spread} | {r['images_per_s']:.1f} | "
              f"{flops} | {mem} | {r['speedup']:.2f}x |")
    print(f"\nwrote {args.json}")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({torch.backends.cpu.get_cpu_capability()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
