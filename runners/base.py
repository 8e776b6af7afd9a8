"""What every runner declares: how to build its network from a config (and so which configs it can take), and
whether it can train in several processes under torchrun.  main.py asks these questions; it lists no runner."""
from pathlib import Path

import torch

from errors import ConfigError, UserError, is_allocation_error
from training.checkpoint import load_trained
from training.precision import maybe_compile, nonfinite_parameters, prepare_model, score_function

# network constructor arguments -> the config keys they come from (to name the key in an error)
CONFIG_KEYS = {"channels": "data.channels", "image_size": "data.image_size", "ngf": "model.ngf",
               "num_classes": "model.num_classes", "nef": "model.nef", "ndf": "model.ndf"}


class Runner:
    """A runner wires data, a network, an objective and a sampler for one experiment.

    Subclasses define ``train()`` and ``test()``, and ``build_model(config)`` when they have one image network.
    """
    distributed = False         # True: ``train()`` runs under torchrun with DistributedDataParallel
    resumable = True            # False: ``--resume_training`` is refused with one line

    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device

    def compare(self):
        """--compare: the test-set loss of each checkpoint of the run, on fixed noise (runners/comparison.py)."""
        from runners.comparison import compare_checkpoints
        compare_checkpoints(self, self.args.image_folder)

    def evaluate(self):
        """--eval (runners with an image sampler override this)."""
        raise UserError(f"--eval is not available for {type(self).__name__}: it has no image sampler to evaluate")

    @staticmethod
    def build_model(config):
        """The runner's network for ``config`` (None: the runner builds its own networks)."""
        return None

    @classmethod
    def check_config(cls, config):
        """Refuse, before any run folder exists, a config whose network cannot be built: the network is built on the
        meta device (no memory, no time), so the rule lives only in the network's constructor."""
        try:
            with torch.device("meta"):
                cls.build_model(config)
        except ValueError as e:
            message = str(e)
            name = message.split(" ", 1)[0].rstrip(":")
            if name in CONFIG_KEYS:
                message = CONFIG_KEYS[name] + message[len(name):]
            raise ConfigError(f"{message} (the {cls.__name__} network)") from e

    def new_model(self, model=None, training=False):
        """A fresh network (``build_model``'s, or ``model`` built by the caller) on the runner's device, in the layout and
        kernels of ``config.compute`` (training/precision.py); a network too
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
            raise UserError(f"checkpoint {path} holds non-finite weights ({', '.join(bad[:3])}"
                            f"{', ...' if len(bad) > 3 else ''}); nothing to sample from it; use an earlier "
                            f"checkpoint_<step>.pth")
        return maybe_compile(model, self.config.compute, cache_root=_cache_root(self.args)), state

    def score_fn(self, model):
        """What the samplers call: ``model`` under ``sampling.amp`` in ``compute``'s layout (training/precision.py)."""
        return score_function(model, self.device, self.config.sampling.amp, self.config.compute,
                              self.config.data.image_size)


def _cache_root(args):
    """``<run>/cache``: where compiled kernels are kept between runs (None without a --run folder)."""
    run = getattr(args, "run", None)
    return Path(run) / "cache" if run else None


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
