"""Networks only: the NCSN RefineNets, the ScoreNet of Figure 1 and the toy MLPs, with the official state-dict keys.

Everything here is pure: tensors in, tensors out; no config objects, files, logging or devices.  A network refuses
sizes it cannot take with a ValueError at construction (the runner turns it into a config error).  Noise schedules
and samplers live in sampling/, objectives in losses/.
"""
from models.refinenet import CondRefineNetDilated, RefineNetDilated
from models.scorenet import ResScore
from models.toy import ToyNCSN, ToyScore

__all__ = ["CondRefineNetDilated", "RefineNetDilated", "ResScore", "ToyScore", "ToyNCSN"]
