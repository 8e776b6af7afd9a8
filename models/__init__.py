"""Networks, noise schedules and samplers.  Everything here is pure: no config objects, files, logging or devices."""
from models.langevin import anneal_langevin_dynamics, langevin_dynamics
from models.refinenet import CondRefineNetDilated, RefineNetDilated
from models.scorenet import ResScore
from models.sigmas import append_dims, geometric_sigmas

__all__ = ["CondRefineNetDilated", "RefineNetDilated", "ResScore", "geometric_sigmas", "append_dims",
           "langevin_dynamics", "anneal_langevin_dynamics"]
