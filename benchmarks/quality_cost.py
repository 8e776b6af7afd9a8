"""Sample quality against cost: a quality score against network evaluations per sample, for every sampler of
sampling/ (annealed Langevin at several T, predictor-corrector, the probability-flow ODE), with and without the final
denoising step (the combinations of COMBOS), for a trained run of AnnealRunner (images: FID/KID) or ToyRunner (2-D:
MMD to the data and the mode-weight error of paper Figure 3).

    python benchmarks/quality_cost.py --doc digits [--run run] [--n 100] [--json quality_cost.json]
                                      [--plot assets/quality_cost.png] [--nfe-grid] [--seeds 2] [--methods heun,...]
                                      [--budgets 10,35,100]
    python benchmarks/quality_cost.py --from-json a.json b.json --plot both.png      # one figure of several runs

``--nfe-grid`` draws every sampler at budgets of about NFE_BUDGETS network evaluations per sample instead (annealed
Langevin at the T that fits the model's L levels, PC, the ODE at two tolerances, the Karras-schedule samplers of
sampling/karras.py at each budget; see nfe_grid), from the main (EMA) weights only; ``--seeds`` repeats each
combination from that many seeds, ``--methods`` keeps some samplers and ``--budgets`` some budgets.

Every combination draws ``--n`` samples from the same seed.  Images are scored exactly as ``--eval`` scores (the
run's reference set and cached Inception statistics, evaluation.scores.image_scores), with the run's EMA and raw
weights (``model.ema: true``; without EMA only the raw rows are drawn).  A toy run is scored with the learned NCSN and
with the exact score of the perturbed mixture (what the learned one should reach), against fresh i.i.d. data
(evaluation.toy_metrics.mode_metrics).  "NFE" is the number of network evaluations per sample (the ODE's interpolated
score evaluates two levels per call: counted as two).
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_cost_report import plot, plot_grid, table  # noqa: E402

from atomic import atomic_write  # noqa: E402
from commands.context import RunContext  # noqa: E402
from compute.precision import nonfinite_parameters  # noqa: E402
from configs import load_config  # noqa: E402
from errors import UserError  # noqa: E402
from sampling.from_config import sampler_from_config  # noqa: E402
from training.checkpoint import load_checkpoint, load_model_state  # noqa: E402

# (family, label, method, sampling keys (config names), denoise, weights): "both" draws the run's main weights (EMA;
# the toy's learned NCSN) and the other ones (raw; the toy's exact score), "main" the main ones only; the raw
# weights only where they answer a question (does EMA help at the paper's sampler, at PC, at the ODE), to keep an
# image run near ten minutes on a CPU
LANGEVIN, PC1 = {"n_steps_each": 100}, {"predictor": "reverse_diffusion", "corrector": "langevin", "n_steps_each": 1}
ODE = {"ode_method": "dopri5", "ode_rtol": 1e-3, "ode_atol": 1e-3}
COMBOS = [("langevin", "Langevin T=10", "langevin", {"n_steps_each": 10}, False, "main"),
          ("langevin", "Langevin T=30", "langevin", {"n_steps_each": 30}, False, "main"),
          ("langevin", "Langevin T=100", "langevin", LANGEVIN, False, "both"),
          ("langevin", "Langevin T=100", "langevin", LANGEVIN, True, "main"),
          ("pc", "PC (RD + Langevin, 1 step)", "pc", PC1, False, "both"),
          ("pc", "PC (RD + Langevin, 1 step)", "pc", PC1, True, "main"),
          ("pc", "PC (RD + Langevin, 5 steps)", "pc", {**PC1, "n_steps_each": 5}, False, "main"),
          ("ode", "ODE (dopri5, tol 1e-3)", "ode", ODE, False, "both")]
# --nfe-grid: the budgets of network evaluations per sample (the Karras samplers stop at 200: 1000 is the paper's
# annealed Langevin, the cost to beat)
NFE_BUDGETS = (10, 20, 35, 50, 100, 200, 1000)
KARRAS_MAX_BUDGET = 200
GRID_PLAIN_BUDGETS = (35, 100)
KARRAS_LABELS = {"heun": "Heun (EDM)", "dpmpp_2m": "DPM-Solver++(2M)", "euler_ancestral": "Euler ancestral"}


def nfe_grid(n_levels, methods=None, budgets=NFE_BUDGETS):
    """The combinations of ``--nfe-grid`` for a model of ``n_levels`` levels (as COMBOS, main weights), restricted
    to ``methods`` (sampling.method names) and to ``budgets`` (``--budgets``).  Each row costs an FID (about 20 s on
    a 2-core CPU), so the grid is what answers the question: the Karras samplers at each budget up to
    KARRAS_MAX_BUDGET with the final denoising step
    (their natural end, sigma = 0) and at GRID_PLAIN_BUDGETS without it; annealed Langevin at T = budget // L steps
    per level with the denoising step, its largest T also without (the paper's sampler); PC with 1 and 4 corrector
    steps per level; the ODE at tolerance 1e-2 and 1e-3 (the latter also without denoising)."""
    grid = []
    steps = sorted({b // n_levels for b in budgets if b // n_levels >= 1})
    for T in steps:
        for denoise in (True, False) if T == steps[-1] else (True,):
            grid.append(("langevin", f"Langevin T={T}", "langevin", {"n_steps_each": T}, denoise))
    for k in (1, 4):
        grid.append(("pc", f"PC (RD + Langevin, {k} step{'s' if k > 1 else ''})", "pc", {**PC1, "n_steps_each": k},
                     True))
    for tol, plain in ((1e-2, False), (1e-3, True)):
        for denoise in (True, False) if plain else (True,):
            grid.append(("ode", f"ODE (dopri5, tol {tol:g})", "ode", {**ODE, "ode_rtol": tol, "ode_atol": tol},
                         denoise))
    for method, label in KARRAS_LABELS.items():
        for b in (b for b in budgets if b <= KARRAS_MAX_BUDGET):
            for denoise in (True, False) if b in GRID_PLAIN_BUDGETS else (True,):
                grid.append((method, f"{label}, NFE {b}", method, {"nfe": b}, denoise))
    return [(family, label, method, keys, denoise, "main") for family, label, method, keys, denoise in grid
            if methods is None or method in methods]


class Counted:
    """A score function that counts the examples it was evaluated on."""

    def __init__(self, score):
        self.score, self.examples = score, 0

    def __call__(self, x, labels):
        self.examples += x.shape[0]
        return self.score(x, labels)


class ImageProblem:
    """An AnnealRunner run: its EMA and raw networks, its samplers' start, FID/KID as ``--eval`` computes them."""
    metric, metric_label, weight_names = "fid", "FID (lower is better)", {"ema": "EMA weights", "raw": "raw weights"}

    def __init__(self, cfg, log, run, device):
        from commands.evaluate import reference_set
        from datasets import data_root
        from evaluation import inception_features, stats_cache_path
        from runners.anneal_runner import AnnealRunner, make_sigmas
        self.cfg, self.device, d = cfg, device, cfg.data
        runner = AnnealRunner(RunContext.of_run(run, log.name, "AnnealRunner"), cfg, device)
        state = load_checkpoint(log / "checkpoint.pth", map_location=device)
        self.step = state.get("step")
        self.scores = {}
        for name, key in (("ema", "ema"), ("raw", "model")):
            if state.get(key) is not None:
                net = runner.new_model()
                load_model_state(net, state, log / "checkpoint.pth", key)
                bad = nonfinite_parameters(net)
                if bad:
                    raise UserError(f"checkpoint {log / 'checkpoint.pth'}: its {self.weight_names[name]} hold "
                                    f"non-finite values ({', '.join(bad[:3])}); nothing to sample from them")
                self.scores[name] = runner.score_fn(net.eval())
        self.sigmas = make_sigmas(cfg, device, dtype=torch.float64)
        self.step_lr, self.default_n, self.baselines = cfg.sampling.step_lr, 100, {}
        self.extractor = inception_features(weights=cfg.eval.inception_weights, allow_download=cfg.eval.allow_download,
                                            device=str(device))
        self.reference, self.source = reference_set(cfg, run)
        self.cache = stats_cache_path(data_root(d, run), d.dataset, cfg.eval.reference_split, self.extractor)

    def weights(self, which):
        main = "ema" if "ema" in self.scores else "raw"
        return [main] + (["raw"] if which == "both" and main == "ema" else [])

    def start(self, choice, n):
        return choice.start(n)

    def threads(self):
        return contextlib.nullcontext()

    def score_samples(self, x):
        from datasets import inverse_data_transform
        from evaluation.export import to_uint8_nhwc
        from evaluation.scores import image_scores
        s = image_scores(to_uint8_nhwc(inverse_data_transform(x, self.cfg.data)), self.reference, self.extractor,
                         self.cache, self.source, kid_subset_size=self.cfg.eval.kid_subset_size)
        return {"fid": s["fid"], "kid": s["kid"], "kid_std": s["kid_std"]}


class ToyProblem:
    """A ToyRunner run: its learned NCSN and the exact score, chains started as the ToyRunner starts them (Langevin
    from U[-bound, bound]^2) or from the prior N(0, sigma_1^2 I), MMD^2 and mode-weight error against i.i.d. data."""
    metric, metric_label = "mmd2", "MMD$^2$ to i.i.d. data (lower is better)"
    weight_names = {"learned": "learned NCSN", "exact": "exact score"}

    def __init__(self, cfg, log, run, device):
        from runners.toy_runner import ToyRunner
        runner = ToyRunner(RunContext.of_run(run, log.name, "ToyRunner"), cfg, device)
        t = cfg.toy
        self.cfg, self.device, self.toy, self.runner = cfg, device, t, runner
        self.dist, self.sigmas = runner.dist, runner.sigmas
        ncsn = runner.trained_model(log / "ncsn" / "checkpoint.pth", runner.networks()[1][1])
        self.step = ncsn[1].get("step")
        self.scores = {"learned": ncsn[0], "exact": self.dist.level_score(self.sigmas)}
        self.step_lr, self.default_n = runner.step_lr, t.n_samples
        seed = cfg.toy.seed if cfg.toy.seed is not None else 0
        self.reference = self.dist.sample(t.n_samples, generator=torch.Generator().manual_seed(seed + 99))
        self.source = f"{t.n_samples} i.i.d. samples of {self.dist.name}"
        # what every sampler without denoising aims at: p_{sigma_L}, the data blurred by the smallest level
        g = torch.Generator().manual_seed(seed + 98)
        blurred = self.dist.sample(t.n_samples, generator=g)
        blurred = blurred + t.sigma_end * torch.randn(blurred.shape, generator=g)
        self.baselines = {"i.i.d. samples of p_sigma_L (no sampler)": self.score_samples(blurred)}

    def weights(self, which):
        return ["learned", "exact"]

    def threads(self):
        return self.runner.threads()        # as the ToyRunner's flows run

    def start(self, choice, n):
        if choice.settings["method"] == "annealed_langevin":
            return self.runner.start(n)
        return self.toy.sigma_begin * torch.randn(n, 2, device=self.device)     # the toy data are centred at 0

    def score_samples(self, x):
        from evaluation.toy_metrics import mode_metrics
        m = mode_metrics(self.dist, x.detach().cpu(), self.reference)
        return {"mmd2": m["mmd2"], "weight_tv": m["weight_tv"], "mode_weights": m["mode_weights"]}


def load_problem(run, doc, device):
    log = Path(run) / "logs" / doc
    if not (log / "config.yml").is_file():
        raise UserError(f"no trained run {log} (no config.yml); train it first, or pass --run/--doc")
    cfg = load_config(log / "config.yml")
    if (log / "ncsn").is_dir():
        return ToyProblem(cfg, log, run, device)
    try:
        return ImageProblem(cfg, log, run, device)
    except UserError as e:
        raise UserError(f"{log} is not an AnnealRunner run whose checkpoint can be sampled (the study takes "
                        f"AnnealRunner and ToyRunner runs): {e}") from e


def draw(problem, score, method, keys, denoise, n, seed):
    """``n`` samples of one combination (``sampling.method``, its ``keys``) from ``seed``, through the sampler that
    --test and --eval use, and the network evaluations per sample."""
    choice = sampler_from_config(problem.cfg, problem.sigmas, problem.device, method=method, denoise=denoise,
                                 step_lr=problem.step_lr, **keys)
    counted = Counted(score)
    torch.manual_seed(seed)
    x = problem.start(choice, n)
    with torch.no_grad():
        x = choice.run(counted, x)
    return x, counted.examples / n


def whole_number(least, why=""):
    """An argparse type: a whole number of at least ``least`` (``why``: the reason, for the message)."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}{why}, got {n}")
        return n
    return parse


def writable_file(text):
    """--json / --plot: a file that can be written (checked before the long work, not after it)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {path.parent} does not exist")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(prog="quality_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--doc")
    p.add_argument("--run", default="run")
    p.add_argument("--n", type=whole_number(2, " (FID, KID and MMD need two samples)"), default=None,
                   help="samples per combination, at least 2 (default 100; a toy: toy.n_samples)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", type=writable_file, default=Path("quality_cost.json"))
    p.add_argument("--plot", type=writable_file, default=None)
    p.add_argument("--nfe-grid", action="store_true", help="every sampler at budgets of NFE (see above)")
    p.add_argument("--seeds", type=whole_number(1), default=1, help="sample seeds per combination (--seed, --seed+1, ...)")
    p.add_argument("--methods", type=method_list, default=None, help="with --nfe-grid: only these samplers")
    p.add_argument("--budgets", type=budget_list, default=None,
                   help="with --nfe-grid: only these NFE budgets (default " + ",".join(map(str, NFE_BUDGETS)) + ")")
    p.add_argument("--from-json", nargs="+", default=None, help="replot --nfe-grid JSONs (with --plot); no sampling")
    args = p.parse_args(argv)
    if args.doc is None and args.from_json is None:
        p.error("the following arguments are required: --doc (or --from-json)")
    if (args.methods or args.budgets) and not args.nfe_grid:
        p.error("--methods and --budgets select rows of --nfe-grid")
    try:
        replot(args) if args.from_json else study(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def study(args):
    """Every combination of COMBOS on the run ``args.run``/logs/``args.doc``: the table, the JSON and the plot."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = load_problem(args.run, args.doc, device)
    n = problem.default_n if args.n is None else args.n
    combos = nfe_grid(len(problem.sigmas), args.methods, args.budgets or NFE_BUDGETS) if args.nfe_grid else COMBOS
    seeds = [args.seed + k for k in range(args.seeds)]
    rows = []
    with problem.threads():
        for family, label, method, keys, denoise, which in combos:
            for weights in problem.weights(which):
                for seed in seeds:
                    start = time.perf_counter()
                    x, nfe = draw(problem, problem.scores[weights], method, keys, denoise, n, seed)
                    rows.append({"family": family, "sampler": label, "weights": weights, "denoise": denoise,
                                 "nfe": nfe, "seed": seed, **problem.score_samples(x),
                                 "seconds": time.perf_counter() - start})
                    print(json.dumps(rows[-1]), flush=True)
    result = {"run": f"{Path(args.run).name}/logs/{args.doc}", "step": problem.step, "n": n, "seeds": seeds,
              "levels": len(problem.sigmas), "sigmas": [float(v) for v in problem.sigmas], "reference": problem.source, "metric": problem.metric,
              "nfe_grid": args.nfe_grid, "rows": rows, "baselines": problem.baselines}
    atomic_write(args.json, json.dumps(result, indent=1).encode())
    print(table(rows, problem.metric))
    for label, values in problem.baselines.items():
        print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    if args.plot and args.nfe_grid:
        plot_grid([result], args.plot, f"{args.doc}: {n} samples vs {problem.source}")
    elif args.plot:
        plot(rows, args.plot, f"{args.doc}: {n} samples vs {problem.source}", problem)


def method_list(text):
    """--methods: comma-separated sampling.method names."""
    from sampling import SAMPLERS
    names = [m for m in text.split(",") if m]
    unknown = [m for m in names if m not in SAMPLERS]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(text)
        raise argparse.ArgumentTypeError(f"unknown sampler {named}; choose from {', '.join(SAMPLERS)}")
    return names


def budget_list(text):
    """--budgets: comma-separated whole numbers of network evaluations per sample, at least 1 each."""
    try:
        budgets = sorted({int(b) for b in text.split(",") if b})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers >= 1 (e.g. 10,35,100)")
    return tuple(budgets)


def replot(args):
    """--from-json: the figure (and tables) of earlier --nfe-grid results, drawing nothing."""
    results = []
    for path in args.from_json:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise UserError(f"--from-json {path}: {e}") from e
        if not results[-1].get("nfe_grid"):
            raise UserError(f"--from-json {path}: not the JSON of a --nfe-grid study")
        print(f"\n{results[-1]['run']} ({results[-1]['levels']} levels)" + table(results[-1]["rows"],
                                                                                  results[-1]["metric"]))
    if args.plot:
        plot_grid(results, args.plot, ", ".join(f"{r['run']} ({r['n']} samples, seeds {r['seeds']})"
                                                for r in results))


if __name__ == "__main__":
    sys.exit(main())
