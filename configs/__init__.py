"""Configuration: the YAML files (*.yml), their schema (frozen dataclasses, schema.py), building it from a dict
(build.py), its value checks (checks.py) and reading/writing config files (files.py).  Data only: nothing here knows
runners, networks or devices; which settings a runner's network can take is checked by the runner (runners/base.py)."""
from configs.build import config_from_dict
from configs.files import config_to_dict, dump_config, load_config, overlay_config, resolve_config_path
from configs.schema import Config, check_training

__all__ = ["Config", "check_training", "config_from_dict", "config_to_dict", "dump_config", "load_config",
           "overlay_config", "resolve_config_path"]
