"""Runners wire data, models, losses and samplers together; main.py dispatches through RUNNERS."""
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

__all__ = ["RUNNERS", "AnnealRunner", "BaselineRunner", "ScoreNetRunner"]
