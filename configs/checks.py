"""The value checks of the config schema: the integer bounds of every section (one place; a key without an entry is
held to a 64-bit integer) and the small checks the dataclasses call in ``__post_init__``.  Each failure is a
one-line ConfigError naming the key path, with a short excerpt of the bad value."""
import typing
from typing import Optional

from errors import ConfigError, excerpt

# Every int field is range-checked (``_check_int_ranges``): by INT_BOUNDS where it has an entry, else to a 64-bit
# integer (a C long; torch, numpy and tensorboard take no larger one).  The upper bounds are far above any real use
# (the paper: 32x32 images, ngf 128, L = 10, batch 128) and rule out only sizes whose allocation cannot succeed.
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
SEED_MAX = 2 ** 32 - 1            # numpy's seed range is [0, 2**32 - 1]
MAX_BATCH_SIZE = 65536            # 512x the paper's 128 (the 2-D toys can use big batches)
MAX_IMAGE_SIZE = 1024             # 4x the 256x256 of the largest later NCSNs; RefineNet activations grow with size^2
MAX_WIDTH = 1024                  # ngf (paper: 64/128), nef, ndf; the networks' parameters grow with width^2
MAX_NOISE_LEVELS = 10000          # model.num_classes / toy.num_sigmas = L (paper: 10; NCSNv2 at 256x256: ~2300)
MAX_N_SAMPLES = 10000             # sampling.n_samples (official: 25): drawn in one batch, shown as one 100x100 grid
MAX_PARTICLES = 1024              # sliced score matching projections (training.n_particles; paper: 1)
MAX_NUM_WORKERS = 256             # DataLoader worker processes
MAX_TOY_SAMPLES = 16384           # toy.n_samples (paper: 1280); the MMD builds n x n float64 matrices (2 GiB each)
MAX_TOY_HIDDEN = 8192             # toy MLP width (default 128)
MAX_RING_MODES = 1000             # toy.ring_modes; far fewer already merge into a continuous ring
MAX_EVAL_SAMPLES = 10_000_000     # eval.n_samples (the paper's Table 1: 50,000); one uint8 npz holds them all

INT_BOUNDS = {                    # "section.key": (lowest, highest, why the highest) for int fields
    "training.batch_size": (1, MAX_BATCH_SIZE, "MAX_BATCH_SIZE"),
    "training.n_particles": (1, MAX_PARTICLES, "MAX_PARTICLES"),
    "training.num_workers": (0, MAX_NUM_WORKERS, "MAX_NUM_WORKERS"),
    "training.preview_freq": (0, INT64_MAX, "a 64-bit integer"),
    "training.preview_samples": (1, MAX_N_SAMPLES, "MAX_N_SAMPLES"),
    "training.preview_steps_each": (1, 100000, "100000 steps per level"),
    "data.image_size": (1, MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE"),
    "model.num_classes": (1, MAX_NOISE_LEVELS, "MAX_NOISE_LEVELS"),
    "model.ngf": (1, MAX_WIDTH, "MAX_WIDTH"),
    "model.nef": (1, MAX_WIDTH, "MAX_WIDTH"),
    "model.ndf": (1, MAX_WIDTH, "MAX_WIDTH"),
    "sampling.n_samples": (1, MAX_N_SAMPLES, "MAX_N_SAMPLES"),
    "toy.seed": (0, SEED_MAX, "numpy's seeds are 0 .. 2**32 - 1"),
    "toy.hidden": (1, MAX_TOY_HIDDEN, "MAX_TOY_HIDDEN"),
    "toy.n_samples": (1, MAX_TOY_SAMPLES, "MAX_TOY_SAMPLES"),
    "toy.num_sigmas": (1, MAX_NOISE_LEVELS, "MAX_NOISE_LEVELS"),
    "eval.n_samples": (1, MAX_EVAL_SAMPLES, "MAX_EVAL_SAMPLES"),
    "eval.batch_size": (1, MAX_BATCH_SIZE, "MAX_BATCH_SIZE"),
    "eval.max_reference": (2, MAX_EVAL_SAMPLES, "MAX_EVAL_SAMPLES"),
    "eval.kid_subset_size": (2, MAX_EVAL_SAMPLES, "MAX_EVAL_SAMPLES"),
    "eval.bpd_n": (1, MAX_EVAL_SAMPLES, "MAX_EVAL_SAMPLES"),
    "eval.bpd_batch_size": (1, MAX_BATCH_SIZE, "MAX_BATCH_SIZE"),
    "eval.compare_n_samples": (0, MAX_EVAL_SAMPLES, "MAX_EVAL_SAMPLES"),
    "eval.n_seeds": (1, 100, "a hundred sample sets"),
    "eval.begin_step": (0, INT64_MAX, "the largest 64-bit integer"),
    "eval.end_step": (0, INT64_MAX, "the largest 64-bit integer"),
    "toy.ring_modes": (1, MAX_RING_MODES, "MAX_RING_MODES"),
}
DEFAULT_INT_BOUNDS = (INT64_MIN, INT64_MAX, "the largest 64-bit integer")


def positive(value, path):
    if value <= 0:
        raise ConfigError(f"{path} must be > 0, got {excerpt(value)}", key=path)


def non_negative(value, path):
    if value < 0:
        raise ConfigError(f"{path} must be >= 0, got {excerpt(value)}", key=path)


def choice(value, choices, path):
    if value not in choices:
        raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got {excerpt(value)}", key=path)


def check_int_ranges(section_obj, section):
    """Range-check every int field of a section by INT_BOUNDS (a 64-bit integer where it has no entry)."""
    for name, tp in typing.get_type_hints(type(section_obj)).items():
        value = getattr(section_obj, name)
        if tp not in (int, Optional[int]) or not isinstance(value, int) or isinstance(value, bool):
            continue
        path = f"{section}.{name}"
        low, high, why = INT_BOUNDS.get(path, DEFAULT_INT_BOUNDS)
        if value < low:
            if low in (0, 1):
                (non_negative if low == 0 else positive)(value, path)
            why_low = " (the smallest 64-bit integer)" if low == INT64_MIN else ""
            raise ConfigError(f"{path} must be >= {low}{why_low}, got {excerpt(value)}", key=path)
        if value > high:
            raise ConfigError(f"{path} must be <= {high} ({why}), got {excerpt(value)}", key=path)
