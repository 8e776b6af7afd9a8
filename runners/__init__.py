"""Runners: one per experiment, each saying only what differs: its network, its training objective, its sampler
and where the chains start, its held-out loss for --compare (and, for the ScoreNet and toy experiments, flows of
their own).  The flows themselves are commands/'s.

``anneal_runner.py`` (NCSN), ``baseline_runner.py``, ``scorenet_runner.py`` (Figure 1), ``toy_runner.py`` (Figures 2
and 3); ``base.py`` (what a runner declares, and its networks: built, loaded, as a score).  What may not live here: a
network (models/), a loss (losses/), a sampler (sampling/), a metric (evaluation/), a flow (commands/) or the
training machinery (training/).  RUNNERS is the one table of runner names; main.py dispatches through it.
"""
from runners.anneal_runner import AnnealRunner
from runners.baseline_runner import BaselineRunner
from runners.scorenet_runner import ScoreNetRunner
from runners.toy_runner import ToyRunner

RUNNERS = {
    "AnnealRunner": AnnealRunner,
    "BaselineRunner": BaselineRunner,
    "ScoreNetRunner": ScoreNetRunner,
    "ToyRunner": ToyRunner,
}

__all__ = ["RUNNERS", "torchrun_refusal", "AnnealRunner", "BaselineRunner", "ScoreNetRunner", "ToyRunner"]


def torchrun_refusal(name, command):
    """Why runner ``name`` cannot run ``command`` ('train', 'test', 'eval' or 'compare') in several processes, or None
    if it can: training and --eval run under torchrun for the runners that declare ``distributed``."""
    if command in ("train", "eval") and RUNNERS[name].distributed:
        return None
    several = ", ".join(n for n, r in RUNNERS.items() if r.distributed)
    what = name if command == "train" else f"--{command} of {name}" if command == "eval" else f"--{command}"
    return (f"{what} runs in a single process; start it without torchrun (several processes: training and --eval "
            f"of {several})")
