"""What every runner declares: how to build its network from a config (and so which configs it can take), and
whether it can train in several processes under torchrun.  main.py asks these questions; it lists no runner."""
import torch

from errors import ConfigError

# network constructor arguments -> the config keys they come from (to name the key in an error)
CONFIG_KEYS = {"channels": "data.channels", "image_size": "data.image_size", "ngf": "model.ngf",
               "num_classes": "model.num_classes", "nef": "model.nef", "ndf": "model.ndf"}


class Runner:
    """A runner wires data, a network, an objective and a sampler for one experiment.

    Subclasses define ``train()`` and ``test()``, and ``build_model(config)`` when they have one image network.
    """
    distributed = False         # True: ``train()`` runs under torchrun with DistributedDataParallel

    def __init__(self, args, config, device):
        self.args, self.config, self.device = args, config, device

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
