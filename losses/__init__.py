"""Score-matching objectives, pure functions: a score network and tensors in, tensors out.

Each objective has the official name (returning the official value) and a per-example form returning the same pair
for every objective: ``(losses (N,), labels (N,) or None)``.  No configs, files, logging or devices here.
"""
from losses.dsm import anneal_dsm_per_example, anneal_dsm_score_estimation, dsm_per_example, dsm_score_estimation
from losses.sliced_sm import (
                        anneal_sliced_per_example,
                        anneal_sliced_score_estimation_vr,
                        sliced_per_example,
                        sliced_score_estimation_vr,
)

__all__ = ["dsm_per_example", "dsm_score_estimation", "anneal_dsm_per_example", "anneal_dsm_score_estimation",
           "sliced_per_example", "sliced_score_estimation_vr", "anneal_sliced_per_example",
           "anneal_sliced_score_estimation_vr"]
