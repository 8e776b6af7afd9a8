"""Score-matching objectives (pure functions: tensors in, tensors out)."""
from losses.dsm import (anneal_dsm_per_example, anneal_dsm_score_estimation, dsm_per_example,
                        dsm_score_estimation)
from losses.sliced_sm import (anneal_sliced_per_example, anneal_sliced_score_estimation_vr,
                              sliced_score_estimation_vr)

__all__ = ["dsm_per_example", "dsm_score_estimation", "anneal_dsm_per_example", "anneal_dsm_score_estimation",
           "sliced_score_estimation_vr", "anneal_sliced_per_example", "anneal_sliced_score_estimation_vr"]
