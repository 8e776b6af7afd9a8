"""NCSNv2's noise rules for a config's data set: ``python tools/noise_rules.py --config digits.yml [--steps-each T]``.

Reads the config's training split through datasets/ (as the runners do), applies the data transform without the
random dequantisation (images in [0, 1], or their logits with ``data.logit_transform``; flattened to D values), and
prints Technique 1's sigma_1 (the largest distance between two training images), Technique 2's ratio gamma and number
of levels L (keeping ``model.sigma_end`` as sigma_L), Technique 4's step size for T steps per level (default the
config's ``sampling.n_steps_each``), and a YAML fragment with these values for a config.  The rules themselves are
in sampling/noise_rules.py.  ``--max-points N``: sigma_1 over a fixed random subset of N training images (stated).
"""
import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):                        # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from configs import load_config  # noqa: E402
from configs.files import read_yaml, resolve_config_path  # noqa: E402
from datasets import data_transform, get_dataset  # noqa: E402
from errors import UserError  # noqa: E402
from sampling import noise_rules as rules  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line ``error: ...`` (exit 2), without argparse's usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(description="NCSNv2 Techniques 1, 2, 4 for a config's data set")
    p.add_argument("--config", required=True, help="a file in configs/ or a path")
    p.add_argument("--steps-each", type=int, default=None,
                   help="Langevin steps per noise level T (default: the config's sampling.n_steps_each)")
    p.add_argument("--max-points", type=int, default=None,
                   help="sigma_1 over a fixed random subset of this many training images (default: all)")
    p.add_argument("--run", default="run", help="as main.py's --run: data sets default to <run>/datasets")
    return p.parse_args(argv)


def training_points(config, run_root, max_points=None, seed=0):
    """The training images as the network sees them, flattened: (N, D) float32, and the size of the full split."""
    train, _ = get_dataset(config.data, run_root)
    total = len(train)
    if max_points is not None and max_points < total:
        keep = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_points]
        train = Subset(train, keep.tolist())
    batches = [x for x, _ in DataLoader(train, batch_size=1000, shuffle=False, num_workers=0)]
    x = data_transform(torch.cat(batches), config.data, dequantize=False)
    return x.flatten(1), total


def compute(points, sigma_end, steps_each):
    """Techniques 1, 2, 4 on points (N, D): a dict of the values the command prints."""
    n, dim = points.shape
    if dim < 5:
        raise UserError(f"Technique 2 needs a data dimension D >= 5, this data set has D = {dim}")
    sigma_begin = rules.max_pairwise_distance(points)
    if not sigma_begin > sigma_end:
        raise UserError(f"the largest distance between training images ({sigma_begin:.4g}) does not exceed "
                        f"model.sigma_end ({sigma_end:g}); no schedule to build")
    gamma = rules.gamma_for_dim(dim)
    levels = rules.num_levels(sigma_begin, sigma_end, gamma)
    ratio = rules.schedule_ratio(sigma_begin, sigma_end, levels)
    eps = rules.step_size_for(ratio, sigma_end, steps_each)
    return {"points": n, "dim": dim, "sigma_begin": sigma_begin, "sigma_end": sigma_end, "gamma_rule": gamma,
            "num_classes": levels, "gamma": ratio, "overlap": rules.overlap(ratio, dim), "n_steps_each": steps_each,
            "step_lr": eps, "variance_ratio": rules.variance_ratio(eps, ratio, sigma_end, steps_each)}


def fragment(v):
    """The YAML lines to paste into a config."""
    return yaml.safe_dump({"model": {"sigma_begin": float(f"{v['sigma_begin']:.4f}"), "sigma_end": v["sigma_end"],
                                     "num_classes": v["num_classes"]},
                           "sampling": {"step_lr": float(f"{v['step_lr']:.3g}"), "n_steps_each": v["n_steps_each"]}},
                          sort_keys=False)


def report(v, name, total):
    subset = "" if v["points"] == total else f" (a fixed random subset of {v['points']} of {total})"
    return "\n".join([
        f"{name}: {v['points']} training images{subset}, D = {v['dim']}",
        f"T1  sigma_1 = max pairwise distance = {v['sigma_begin']:.6f}",
        f"T2  gamma (Phi rule = 0.5) = {v['gamma_rule']:.6f}; L = {v['num_classes']} levels from sigma_1 to sigma_L "
        f"= {v['sigma_end']:g}, ratio {v['gamma']:.6f} (Phi expression {v['overlap']:.4f})",
        f"T4  T = {v['n_steps_each']} steps per level: step_lr (the 2020 paper's eps) = {v['step_lr']:.4g}, "
        f"s_T^2 / sigma^2 = {v['variance_ratio']:.6f}",
        "# NCSNv2 Techniques 1, 2, 4 (tools/noise_rules.py); T3: model.scale_by_sigma: true",
        fragment(v).rstrip()])


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.steps_each is not None and args.steps_each < 1:
            raise UserError(f"--steps-each must be a positive integer, got {args.steps_each}")
        if args.max_points is not None and args.max_points < 2:
            raise UserError(f"--max-points must be at least 2, got {args.max_points}")
        path = resolve_config_path(args.config)
        config = load_config(path)
        raw = read_yaml(path)
        if isinstance(raw, dict) and "toy" in raw and "data" not in raw:
            raise UserError(f"{args.config} is a 2-D toy config (ToyRunner): it has no image data set, and the noise "
                            f"rules are computed on a config's training images (e.g. --config digits.yml)")
        if args.steps_each is not None:
            try:
                dataclasses.replace(config.sampling, n_steps_each=args.steps_each)    # the config's own bounds
            except UserError as e:
                raise UserError(f"--steps-each: {e}") from e
        points, total = training_points(config, args.run, args.max_points)
        steps = args.steps_each or config.sampling.n_steps_each
        values = compute(points, config.model.sigma_end, steps)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(values, config.data.dataset, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
