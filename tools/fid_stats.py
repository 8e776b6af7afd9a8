"""A run's reference statistics as a published file: ``python tools/fid_stats.py --doc digits --format mu-sigma -o
digits_stats.npz``.

Computes (or reuses from the cache beside the data) the Inception statistics of the run's reference set, exactly as
``--eval`` scores against them (``eval.reference_split``, ``eval.max_reference``, ``eval.inception_weights``), and
writes them in the format others read: ``mu-sigma`` (``mu``, ``sigma``: TTUR's and pytorch-fid's format, which EDM
uses too) or ``pool_3`` (score_sde's: the features themselves, the cache's fixed subset of at most 10,000 images).
``eval.reference_stats`` reads both back (evaluation/published.py).
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):                        # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commands.evaluate import reference_set  # noqa: E402
from configs import load_config  # noqa: E402
from datasets import data_root  # noqa: E402
from errors import UserError  # noqa: E402
from evaluation import inception_features, reference_statistics, stats_cache_path  # noqa: E402
from evaluation.published import FORMATS, sha256_of, write_statistics_file  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog="fid_stats.py", description=__doc__.splitlines()[0])
    p.add_argument("--doc", required=True, help="the run whose reference set is written")
    p.add_argument("--run", default="run", help="folder of the runs (as main.py's --run)")
    p.add_argument("--format", choices=sorted(FORMATS), required=True, help="mu-sigma (TTUR) or pool_3 (score_sde)")
    p.add_argument("-o", "--output", required=True, help="the .npz file to write")
    args = p.parse_args(argv)
    out = Path(args.output)
    try:
        if out.suffix != ".npz" or out.exists() or not out.parent.is_dir():
            raise UserError(f"-o {out}: must name a new .npz file in an existing folder"
                            f"{' (it exists)' if out.exists() else ''}")
        log = Path(args.run) / "logs" / args.doc
        if not (log / "config.yml").is_file():
            raise UserError(f"no trained run at {log} (missing config.yml)")
        cfg = load_config(log / "config.yml")
        e = cfg.eval
        extractor = inception_features(weights=e.inception_weights, allow_download=e.allow_download)
        reference, source = reference_set(cfg, args.run)
        cache = stats_cache_path(data_root(cfg.data, args.run), cfg.data.dataset, e.reference_split, extractor)
        statistics = reference_statistics(reference, extractor, cache, source=source)
        write_statistics_file(statistics, out, args.format)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({FORMATS[args.format]}; {source}, {statistics['meta']['n']} images, {extractor.name}); "
          f"SHA-256 {sha256_of(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
