"""Configuration: the YAML files (*.yml) and their schema (frozen dataclasses).  Data only: nothing here knows
runners, networks or devices; which settings a runner's network can take is checked by the runner (runners/base.py)."""
from configs.schema import (Config, config_from_dict, config_to_dict, dump_config, load_config, overlay_config,
                            resolve_config_path)

__all__ = ["Config", "config_from_dict", "config_to_dict", "dump_config", "load_config", "overlay_config",
           "resolve_config_path"]
