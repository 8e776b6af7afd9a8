"""Commands: the flows of ``main.py``, one module each, read top to bottom.

``context.py`` (the frozen RunContext built from the flags), ``rundirs.py`` (the run's folders: created, replaced,
put back), ``train.py`` (training), ``sample.py`` (``--test``: samples, movie, inpainting), ``evaluate.py``
(``--eval``: export, FID/KID, bits/dim, neighbours), ``compare.py`` (``--compare``: the held-out loss of every
checkpoint), ``figure1.py`` and ``toy.py`` (the ScoreNetRunner's and the ToyRunner's own flows).  A flow is
``flow(ctx, runner)``: it asks the runner (runners/) what differs per experiment and writes each output once.
Nothing here imports runners/.
"""
from commands import compare, evaluate, sample, train

FLOWS = {"train": train.train, "test": sample.sample, "eval": evaluate.evaluate, "compare": compare.compare}


def flow(runner, command):
    """The flow of ``command`` for ``runner``: the runner's own (``runner.flows``) or the image flow."""
    return runner.flows.get(command, FLOWS[command])
