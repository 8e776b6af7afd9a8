"""Training: the one loop and everything a long run needs.

``setup.py`` (TrainSetup, optimizer, streams), ``loop.py`` (Objective, the step and the loop with its non-finite
diagnostics, previews), ``checkpoint.py`` (atomic, safe checkpoint IO in the official-compatible format), ``resume.py``
(which checkpoint to continue from, restoring and changed settings), ``checkpoint_checks.py`` (validation of every
field before a resume), ``ema.py`` (the moving average of the weights, ``model.ema``), ``rng.py``
(seeding and random states), ``distributed.py`` (torchrun / DDP), ``signals.py`` (clean stops).
How the network is computed (autocast, layout, compile) is compute/'s.  What may not live here: networks (models/), objectives (losses/), data
(datasets/), samplers (sampling/), or anything about a particular experiment (runners/).
"""
