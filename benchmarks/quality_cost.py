"""Sample quality against cost: FID/KID against network evaluations per sample, for every sampler of sampling/
(annealed Langevin at several T, predictor-corrector, the probability-flow ODE), with the raw and the EMA weights of a
trained run, with and without the final denoising step (the combinations of COMBOS).

    python benchmarks/quality_cost.py --doc digits_v2 [--run run] [--n 100] [--json quality_cost.json]
                                      [--plot assets/quality_cost.png]

Every combination draws ``--n`` samples from the same seed and is scored exactly as ``--eval`` scores (the run's
reference set and cached Inception statistics, evaluation.scores.image_scores).  "NFE" is the number of network
evaluations per sample (the ODE's interpolated score evaluates two levels per call: counted as two).
The run must have EMA weights for the EMA rows (``model.ema: true``); without them only the raw rows are drawn.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import load_config  # noqa: E402
from datasets import inverse_data_transform  # noqa: E402
from evaluation.export import to_uint8_nhwc  # noqa: E402
from runners.anneal_runner import AnnealRunner, make_sigmas  # noqa: E402
from runners.evaluate import reference_set  # noqa: E402
from sampling import SAMPLERS, initial_state  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.precision import prepare_model, score_function, to_layout  # noqa: E402

# (family, label, method, sampler keyword arguments, denoise, weights); the raw weights only where they answer a
# question (does EMA help at the paper's sampler, at PC, at the ODE), to keep the run near ten minutes on a CPU
LANGEVIN, PC1 = {"n_steps_each": 100}, {"predictor": "reverse_diffusion", "corrector": "langevin", "n_steps_each": 1}
ODE = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3}
BOTH, EMA = ("ema", "raw"), ("ema",)
COMBOS = [("langevin", "Langevin T=10", "langevin", {"n_steps_each": 10}, False, EMA),
          ("langevin", "Langevin T=30", "langevin", {"n_steps_each": 30}, False, EMA),
          ("langevin", "Langevin T=100", "langevin", LANGEVIN, False, BOTH),
          ("langevin", "Langevin T=100", "langevin", LANGEVIN, True, EMA),
          ("pc", "PC (RD + Langevin, 1 step)", "pc", PC1, False, BOTH),
          ("pc", "PC (RD + Langevin, 1 step)", "pc", PC1, True, EMA),
          ("pc", "PC (RD + Langevin, 5 steps)", "pc", {**PC1, "n_steps_each": 5}, False, EMA),
          ("ode", "ODE (dopri5, tol 1e-3)", "ode", ODE, False, BOTH)]


class Counted:
    """A score function that counts the examples it was evaluated on."""

    def __init__(self, score):
        self.score, self.examples = score, 0

    def __call__(self, x, labels):
        self.examples += x.shape[0]
        return self.score(x, labels)


def networks(cfg, state, device):
    out = {}
    for name, key in (("raw", "model"), ("ema", "ema")):
        if state.get(key) is None:
            continue
        net = prepare_model(AnnealRunner.build_model(cfg).to(device), cfg.compute)
        net.load_state_dict(state[key])
        out[name] = net.eval()
    return out


def draw(cfg, net, device, method, kwargs, denoise, n, seed):
    d, smp = cfg.data, cfg.sampling
    sigmas = make_sigmas(cfg, device, dtype=torch.float64)
    score = Counted(score_function(net, device, smp.amp, cfg.compute, d.image_size))
    torch.manual_seed(seed)
    x = initial_state(method, (n, d.channels, d.image_size, d.image_size), cfg.model.sigma_begin,
                      logit_transform=d.logit_transform, device=device)
    extra = {"step_lr": smp.step_lr} if method == "langevin" else {}
    if method == "pc":
        extra = {"snr": smp.snr}
    x = SAMPLERS[method](score, to_layout(x, cfg.compute), sigmas, denoise=denoise, **kwargs, **extra)
    return to_uint8_nhwc(inverse_data_transform(x, d)), score.examples / n


def main():
    from evaluation import inception_features, stats_cache_path
    from evaluation.scores import image_scores
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doc", required=True)
    p.add_argument("--run", default="run")
    p.add_argument("--n", type=int, default=100, help="samples per combination")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", default="quality_cost.json")
    p.add_argument("--plot", default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log = Path(args.run) / "logs" / args.doc
    cfg = load_config(log / "config.yml")
    state = load_checkpoint(log / "checkpoint.pth", map_location=device)
    nets = networks(cfg, state, device)
    extractor = inception_features(weights=cfg.eval.inception_weights, allow_download=cfg.eval.allow_download,
                                   device=str(device))
    reference, source = reference_set(cfg, args.run)
    data_root = Path(cfg.data.root).expanduser() if cfg.data.root else Path(args.run) / "datasets"
    cache = stats_cache_path(data_root, cfg.data.dataset, cfg.eval.reference_split, extractor)
    rows = []
    for family, label, method, kwargs, denoise, which in COMBOS:
        for weights in which:
            if weights in nets:
                net = nets[weights]
                start = time.perf_counter()
                samples, nfe = draw(cfg, net, device, method, kwargs, denoise, args.n, args.seed)
                scores = image_scores(samples, reference, extractor, cache, source,
                                      kid_subset_size=cfg.eval.kid_subset_size)
                rows.append({"family": family, "sampler": label, "weights": weights, "denoise": denoise,
                             "nfe": nfe, "fid": scores["fid"], "kid": scores["kid"], "kid_std": scores["kid_std"],
                             "seconds": time.perf_counter() - start})
                print(json.dumps(rows[-1]), flush=True)
    result = {"run": str(log), "step": state.get("step"), "n": args.n, "seed": args.seed, "reference": source,
              "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("\n| sampler | weights | denoise | NFE / sample | FID | KID (x1e3) | seconds |\n|---|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["fid"]):
        print(f"| {r['sampler']} | {r['weights']} | {'yes' if r['denoise'] else 'no'} | {r['nfe']:.0f} | "
              f"{r['fid']:.1f} | {1e3 * r['kid']:.2f} +- {1e3 * r['kid_std']:.2f} | {r['seconds']:.0f} |")
    if args.plot:
        plot(rows, args.plot, f"{args.doc}: {args.n} samples vs {source}")


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"langevin": "tab:blue", "pc": "tab:orange", "ode": "tab:green"}
    for r in rows:
        ema = r["weights"] == "ema"
        ax.scatter(r["nfe"], r["fid"], c=colours[r["family"]], marker="o" if ema else "x",
                   s=60 if r["denoise"] else 30, edgecolors="k" if r["denoise"] and ema else None,
                   linewidths=2 if r["denoise"] and not ema else None)
    for family, colour in colours.items():
        ax.scatter([], [], c=colour, label=family)
    ax.scatter([], [], c="grey", marker="o", label="EMA weights")
    ax.scatter([], [], c="grey", marker="x", label="raw weights")
    ax.scatter([], [], c="grey", s=60, edgecolors="k", label="with denoising")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
