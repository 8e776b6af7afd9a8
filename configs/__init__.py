"""Configuration files (*.yml) and their schema."""
from configs.schema import (Config, ConfigError, UserError, config_from_dict, config_to_dict, dump_config,
                            load_config, resolve_config_path)

__all__ = ["Config", "ConfigError", "UserError", "config_from_dict", "config_to_dict", "dump_config", "load_config",
           "resolve_config_path"]
