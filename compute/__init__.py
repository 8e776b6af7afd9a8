"""The compute path: how a network is computed, whatever it computes.  ``precision.py``: autocast
(``training.amp`` / ``sampling.amp``), the memory layout (channels-last inputs and weights), fused kernels,
``torch.compile``, the score function the samplers call, and ``unwrap`` (the bare network inside any wrapper).
Training, sampling, evaluation and the benchmark all import it; nothing here trains, samples or reads files."""
