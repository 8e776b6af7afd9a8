"""Validated configuration: YAML -> frozen dataclasses, and back.

Every section is a frozen dataclass; unknown keys, wrong types and impossible values raise :class:`ConfigError`
naming the key path (e.g. ``optim.lr``).  Keys that the official configs have keep their names and meanings; new keys
have defaults, so the official ``anneal.yml`` / ``baseline.yml`` / ``scorenet.yml`` load unchanged.
"""
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent


def _positive(value, path):
    if value <= 0:
        raise ConfigError(f"{path} must be > 0, got {value}")


def _non_negative(value, path):
    if value < 0:
        raise ConfigError(f"{path} must be >= 0, got {value}")


def _choice(value, choices, path):
    if value not in choices:
        raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got {value!r}")


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

    def __post_init__(self):
        for name in ("batch_size", "n_epochs", "n_iters", "ngpu", "snapshot_freq", "n_particles", "test_freq",
                     "log_freq"):
            _positive(getattr(self, name), f"training.{name}")
        _non_negative(self.num_workers, "training.num_workers")
        _non_negative(self.noise_std, "training.noise_std")
        _choice(self.algo, ("dsm", "ssm"), "training.algo")
        _choice(self.amp, ("none", "bf16", "fp16"), "training.amp")


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


@dataclass(frozen=True)
class Sampling:
    n_samples: int = 25                # official: 25 (a 5x5 grid)
    n_steps_each: int = 100            # annealed Langevin steps per noise level
    n_steps: int = 1000                # plain Langevin steps (BaselineRunner)
    step_lr: float = 2e-5              # = the paper's eps / 2 (see sampling/langevin.py)
    denoise: bool = False              # one extra denoising step at the end (not in the official code)
    gif_every: int = 10                # keep every n-th step as a GIF frame (official: 10)
    save_all_frames: bool = False      # also write every step as PNG + tensor (the official behaviour)
    inpainting: bool = False           # AnnealRunner --test: complete the right half of test images

    def __post_init__(self):
        for name in ("n_samples", "n_steps_each", "n_steps", "step_lr", "gif_every"):
            _positive(getattr(self, name), f"sampling.{name}")


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


@dataclass(frozen=True)
class Config:
    training: Training = field(default_factory=Training)
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    sampling: Sampling = field(default_factory=Sampling)
    toy: Toy = field(default_factory=Toy)


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
    raise ConfigError(f"{path} must be of type {tp.__name__}, got {type(value).__name__} {value!r}")


def _build(cls, raw, path):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # a key that is not a plain name (a number, one with spaces or a line break) is shown quoted, on one line
    unknown = sorted(k if isinstance(k, str) and k.isidentifier() else repr(k) for k in raw if k not in names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]} (allowed in {path or 'the top level'}: "
                          f"{', '.join(sorted(names))})")
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


def load_config(path):
    """Read a YAML file with ``yaml.safe_load`` and validate it; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as e:     # ValueError: e.g. an impossible date 2019-02-30
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"malformed YAML in {path}: {first}") from e
    if raw is None:
        raise ConfigError(f"config {path} is empty")
    try:
        return config_from_dict(raw)
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
