"""The report of benchmarks/quality_cost.py: its rows as a markdown table (averaged over seeds) and its figures
(every combination of one run; FID against NFE from --nfe-grid results of several runs)."""
import textwrap
from pathlib import Path

from reports.outputs import save_figure


def averaged(rows, metric):
    """The rows of one combination (sampler, weights, denoise) over its seeds: one row each, with the mean of
    ``metric`` (and of KID), the seeds' values (``per_seed``) and the summed seconds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["weights"], r["denoise"]), []).append(r)
    out = []
    for group in groups.values():
        mean = {k: sum(r[k] for r in group) / len(group) for k in (metric, "kid", "kid_std", "nfe") if k in group[0]}
        out.append({**group[0], **mean, "per_seed": [r[metric] for r in group],
                    "seconds": sum(r["seconds"] for r in group)})
    return out


def table(rows, metric):
    """The rows as a markdown table, best first (a combination drawn from several seeds: its mean, then each)."""
    rows = averaged(rows, metric)
    several = any(len(r["per_seed"]) > 1 for r in rows)
    if metric == "fid":
        head = ("| sampler | weights | denoise | NFE / sample | FID | KID (x1e3) | seconds |\n"
                "|---|---|---|---:|---:|---:|---:|")
        cells = lambda r: (f"{r['fid']:.1f}" + (f" ({', '.join(f'{v:.1f}' for v in r['per_seed'])})"   # noqa: E731
                                                 if several else "")
                           + f" | {1e3 * r['kid']:.2f} +- {1e3 * r['kid_std']:.2f}")
    else:
        head = ("| sampler | score | denoise | NFE / sample | MMD^2 (x1e3) | mode-weight error | seconds |\n"
                "|---|---|---|---:|---:|---:|---:|")
        cells = lambda r: f"{1e3 * r['mmd2']:.2f} | {r['weight_tv']:.3f}"                          # noqa: E731
    lines = [f"| {r['sampler']} | {r['weights']} | {'yes' if r['denoise'] else 'no'} | {r['nfe']:.0f} | {cells(r)} | "
             f"{r['seconds']:.0f} |" for r in sorted(rows, key=lambda r: r[metric])]
    return "\n" + head + "\n" + "\n".join(lines)


def plot(rows, path, title, problem):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"langevin": "tab:blue", "pc": "tab:orange", "ode": "tab:green"}
    main, other = list(problem.weight_names)
    for r in rows:
        first = r["weights"] == main
        ax.scatter(r["nfe"], r[problem.metric], c=colours[r["family"]], marker="o" if first else "x",
                   s=60 if r["denoise"] else 30, edgecolors="k" if r["denoise"] and first else None,
                   linewidths=2 if r["denoise"] and not first else None)
    for family, colour in colours.items():
        ax.scatter([], [], c=colour, label=family)
    ax.scatter([], [], c="grey", marker="o", label=problem.weight_names[main])
    ax.scatter([], [], c="grey", marker="x", label=problem.weight_names[other])
    ax.scatter([], [], c="grey", s=60, edgecolors="k", label="with denoising")
    for label, values in problem.baselines.items():
        ax.axhline(values[problem.metric], color="grey", linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log")
    if problem.metric == "mmd2":        # an unbiased MMD^2 can be slightly negative: then a linear scale near 0
        values = [r["mmd2"] for r in rows] + [v["mmd2"] for v in problem.baselines.values()]
        ax.set_yscale("log") if min(values) > 0 else ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel(problem.metric_label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


GRID_COLOURS = {"langevin": "tab:blue", "pc": "tab:orange", "ode": "tab:green", "heun": "tab:red",
                "dpmpp_2m": "tab:purple", "euler_ancestral": "tab:brown"}


def plot_grid(results, path, title):
    """FID (or the toy's MMD) against NFE from ``--nfe-grid`` results: one line per sampler (colour), final
    denoising step (solid: with, dotted: without) and run (marker), each point the mean over its seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 5))
    markers = "osD^v"
    metric = results[0]["metric"]
    for k, result in enumerate(results):
        lines = {}
        for r in averaged(result["rows"], metric):
            lines.setdefault((r["family"], r["denoise"]), []).append((r["nfe"], r[metric]))
        for (family, denoise), points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], color=GRID_COLOURS[family],
                    linestyle="-" if denoise else ":", marker=markers[k % len(markers)], markersize=4,
                    label=f"{result['run'].split('/')[-1]}: {family}{' + denoise' if denoise else ''}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel("FID (lower is better)" if metric == "fid" else "MMD$^2$ to i.i.d. data (lower is better)")
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=9)     # several runs: one line would be cut
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
