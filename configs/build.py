"""A plain dict (from YAML) into a validated :class:`configs.schema.Config`: unknown keys, with the closest allowed
ones, and wrong types are one ConfigError naming the key path; the sections' own value checks run as each is built."""
import dataclasses
import difflib
import math
import typing

from configs.schema import Config
from errors import ConfigError, excerpt


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


def key_name(key):
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
    unknown = sorted(key_name(k) for k in raw if k not in names)
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
