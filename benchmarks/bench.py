"""Speed benchmark: training steps and annealed-Langevin steps, variants measured side by side in one run.

The model, objective and step are built by the same functions the runners use (runners/anneal_runner.py,
training/loop.py), so a speed option is wired once.

    python benchmarks/bench.py --device cpu            # or cuda
    python benchmarks/bench.py --device cuda --json out.json

Every variant runs the same network and batch; the table reports milliseconds per step and the ratio to the
faithful baseline (float32, eager), which is what the official code computes.  Speed claims in README.md come from
this script only.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import config_from_dict  # noqa: E402
from runners.anneal_runner import AnnealRunner, make_sigmas, ncsn_objective  # noqa: E402
from sampling import anneal_langevin_dynamics  # noqa: E402
from training.loop import forward_loss, update  # noqa: E402
from training.precision import autocast_context  # noqa: E402
from training.setup import make_optimizer  # noqa: E402

SETTINGS = {   # name: (channels, image_size, ngf, train batch)
    "digits": (1, 8, 32, 128),
    "mnist": (1, 28, 64, 128),
    "cifar10": (3, 32, 128, 128),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def setting_config(name, batch):
    """The official NCSN config (anneal.yml defaults) at this setting's data shape, width and batch."""
    c, size, ngf, _ = SETTINGS[name]
    return config_from_dict({"data": {"dataset": "MNIST", "channels": c, "image_size": size},
                             "model": {"ngf": ngf}, "training": {"batch_size": batch}})


def bench_train(name, device, amp, channels_last, batch, warmup, reps):
    """One training step exactly as AnnealRunner takes it: its network, its objective, the loop's step functions."""
    config = setting_config(name, batch)
    c, size = config.data.channels, config.data.image_size
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = AnnealRunner.build_model(config).to(device).to(memory_format=fmt)
    opt = make_optimizer(model.parameters(), config.optim)
    objective = ncsn_objective(config, make_sigmas(config, device))
    x = torch.rand(batch, c, size, size, device=device).contiguous(memory_format=fmt)

    def step():
        loss, _, _ = forward_loss(model, objective.loss_fn, x, amp)
        update(opt, loss)
    return timeit(step, device, warmup, reps)


def bench_sample(name, device, amp, n, steps):
    """Annealed Langevin steps with AnnealRunner's network and the one sampler (float64 step sizes, as --test)."""
    config = setting_config(name, n)
    c, size = config.data.channels, config.data.image_size
    torch.manual_seed(0)
    model = AnnealRunner.build_model(config).to(device).eval()
    sigmas = make_sigmas(config, device, dtype=torch.float64)
    x = torch.rand(n, c, size, size, device=device)

    def score(x, labels):
        with autocast_context(device, amp):
            return model(x, labels).float()
    anneal_langevin_dynamics(score, x, sigmas[:1], n_steps_each=3)          # warm-up
    sync(device)
    t = time.perf_counter()
    anneal_langevin_dynamics(score, x, sigmas[:1], n_steps_each=steps)
    sync(device)
    return (time.perf_counter() - t) / steps * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--settings", nargs="+", default=None, help=f"subset of {list(SETTINGS)}")
    p.add_argument("--batch", type=int, default=None, help="training batch (default: 128 on CUDA, 32 on CPU)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--sample-n", type=int, default=25)
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    settings = args.settings or (list(SETTINGS) if cuda else ["digits", "mnist"])
    reps = args.reps or (20 if cuda else 5)
    rows = []
    train_variants = [("fp32", "none", False), ("bf16 autocast", "bf16", False)]
    if cuda:
        train_variants += [("fp32 channels_last", "none", True), ("bf16 channels_last", "bf16", True)]
    sample_variants = [("fp32", "none"), ("bf16 autocast", "bf16")]
    for name in settings:
        batch = args.batch or (SETTINGS[name][3] if cuda or name == "digits" else 32)
        base = None
        for label, amp, cl in train_variants:
            ms = bench_train(name, device, amp, cl, batch, warmup=3, reps=reps)
            base = base or ms
            rows.append({"setting": name, "what": f"train step (batch {batch})", "variant": label, "ms": ms,
                         "speedup": base / ms})
            print(rows[-1], flush=True)
        base = None
        for label, amp in sample_variants:
            ms = bench_sample(name, device, amp, args.sample_n, steps=50 if cuda else 10)
            base = base or ms
            rows.append({"setting": name, "what": f"Langevin step ({args.sample_n} samples)", "variant": label,
                         "ms": ms, "speedup": base / ms})
            print(rows[-1], flush=True)
    dev = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    print(f"\ndevice: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    print("| setting | what | variant | ms / step | speed-up |\n|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['what']} | {r['variant']} | {r['ms']:.2f} | {r['speedup']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
