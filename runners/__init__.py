"""Runners wire data, models, losses and samplers together; main.py dispatches through RUNNERS."""
from runners.anneal_runner import AnnealRunner

RUNNERS = {
    "AnnealRunner": AnnealRunner,
}

__all__ = ["RUNNERS", "AnnealRunner"]
