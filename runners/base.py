"""What every runner declares: how to build its network from a config (and so which configs it can take), what
it trains, samples and scores, and whether it can train in several processes under torchrun.  The flows that use
these declarations are commands/'s; main.py asks these questions and lists no runner."""
from pathlib import Path

import torch

from compute.precision import maybe_compile, nonfinite_parameters, prepare_model, score_function
from errors import ArgumentError, ConfigError, UserError, is_allocation_error
from training.checkpoint import load_trained, uses_ema

# network constructor arguments -> the config keys they come from (to name the key in an error)
CONFIG_KEYS = {"channels": "data.channels", "image_size": "data.image_size", "ngf": "model.ngf",
               "num_classes": "model.num_classes", "nef": "model.nef", "ndf": "model.ndf"}


class Runner:
    """A runner says what one experiment is: its data and network, its objective, its sampler and its held-out
    loss; the commands (commands/) run the flows with them.  Each hook returns None where the experiment has no
    such thing, and the command says so in one line.

    ``flows`` maps a command ('train', 'test', 'eval', 'compare') to a flow of the runner's own, ``flow(ctx,
    runner)``, for an experiment whose report is not the image flow's (Figure 1, the toy figures).
    """
    distributed = False         # True: training and --eval run under torchrun (DistributedDataParallel)
    resumable = True            # False: ``--resume_training`` is refused with one line
    loss_log = False            # True: training also appends its losses to <log>/losses.csv (reports.outputs)
    likelihood = False          # True: eval.bpd can score the network (a score at every level of a schedule)
    flows = {}

    def __init__(self, ctx, config, device):
        self.ctx, self.config, self.device = ctx, config, device

    # ------------------------------------------------------------------------------------- what differs

    @staticmethod
    def build_model(config):
        """The runner's network for ``config`` (None: the runner builds its own networks)."""
        return None

    def objective(self):
        """What training minimises: a ``training.loop.Objective``."""
        return None

    def sampler(self):
        """The image sampler of --test and --eval: a ``sampling.from_config.SamplerChoice`` (None: none)."""
        return None

    def held_out_loss(self, objective=None):
        """How --compare scores a checkpoint: an ``evaluation.held_out.HeldOutLoss`` (None: no test set);
        ``objective`` 'dsm' or 'ssm' overrides the training objective where the runner allows it."""
        return None

    # ---------------------------------------------------------------------------- networks, for the flows

    @classmethod
    def check_config(cls, config):
        """Refuse, before any run folder exists, a config whose network cannot be built: the network is built on the
        meta device (no memory, no time), so the rule lives only in the network's constructor."""
        try:
            with torch.device("meta"):
                cls.build_model(config)
        except ArgumentError as e:
            key = CONFIG_KEYS.get(e.argument)
            raise ConfigError(f"{key or e.argument} {e.detail} (the {cls.__name__} network)", key=key) from e
        except ValueError as e:
            raise ConfigError(f"{e} (the {cls.__name__} network)") from e

    def new_model(self, model=None, training=False):
        """A fresh network (``build_model``'s, or ``model`` built by the caller) on the runner's device, in the layout and
        kernels of ``config.compute`` (compute/precision.py); a network too
        large for the device's memory is one clear error, not an allocator traceback or an exhausted machine.
        ``training``: count the gradients and Adam's two moments too (4 copies of the weights)."""
        name = type(self).__name__
        try:
            if model is None:
                _check_fits(self.config, self.build_model, self.device, name, copies=4 if training else 1)
                model = self.build_model(self.config)
            return prepare_model(model.to(self.device), self.config.compute, training=training)
        except (RuntimeError, MemoryError) as e:
            if not is_allocation_error(e):
                raise
            raise UserError(f"not enough memory on {self.device} for the {name} network of this config (model.ngf "
                            f"{self.config.model.ngf}, data.image_size {self.config.data.image_size})") from e

    def trained_model(self, path, model=None):
        """The network with the weights of the checkpoint at ``path``, in eval mode: (model, checkpoint state); the
        EMA weights when the checkpoint has them (``load_trained``).  Non-finite weights are refused: sampling from
        them gives only NaN images."""
        model, state = load_trained(self.new_model(model), path, self.device)
        bad = nonfinite_parameters(model)
        if bad:
            names = f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
            if uses_ema(state) and all(bool(torch.isfinite(v).all()) for v in state["model"].values()
                                       if torch.is_tensor(v) and v.is_floating_point()):
                raise UserError(f"checkpoint {path}: its EMA weights (model.ema, used for sampling) hold non-finite "
                                f"values ({names}) while its raw weights are finite; use an earlier "
                                f"checkpoint_<step>.pth")
            raise UserError(f"checkpoint {path} holds non-finite weights ({names}); nothing to sample from it; use "
                            f"an earlier checkpoint_<step>.pth")
        return maybe_compile(model, self.config.compute, cache_root=_cache_root(self.ctx)), state

    def score_fn(self, model):
        """What the samplers call: ``model`` under ``sampling.amp`` in ``compute``'s layout (compute/precision.py)."""
        return score_function(model, self.device, self.config.sampling.amp, self.config.compute,
                              self.config.data.image_size)


def _cache_root(ctx):
    """``<run>/cache``: where compiled kernels are kept between runs."""
    return Path(ctx.run) / "cache"


def _check_fits(config, build, device, name, copies):
    """Refuse a network whose ``copies`` copies of the weights would not fit in the memory available now (on CPU:
    MemAvailable); the network is measured on the meta device."""
    with torch.device("meta"):
        n_bytes = copies * sum(p.numel() * p.element_size() for p in build(config).parameters())
    available = _available_bytes(device)
    if available is not None and n_bytes > available:
        what = "weights, gradients and Adam's two moments" if copies == 4 else "weights"
        raise UserError(f"the {name} network of this config needs {n_bytes / 2**30:.1f} GiB for its {what}, more "
                        f"than the {available / 2**30:.1f} GiB of memory available on {device}; reduce model.ngf or "
                        f"data.image_size")


def _available_bytes(device):
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:             # not Linux: rely on the allocator's own error
        return None
    return None
