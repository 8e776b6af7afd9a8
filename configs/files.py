"""Config files: finding them (``--config``), reading YAML safely (no Python tags but the official
``!!python/object:argparse.Namespace``, read as data; duplicate keys and absurd integers refused), validating them
into a Config, laying a trained run's overlay over its config, and writing ``config.yml`` atomically."""
import dataclasses
from pathlib import Path

import yaml

from atomic import atomic_write
from configs.build import config_from_dict, key_name
from errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent


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
                    child_path = f"{path}.{key_name(key)}" if path else key_name(key)
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


OVERLAY_SECTIONS = ("sampling", "eval", "compute")     # what --config may change on a trained run (--test, --eval, --compare)
OVERLAY_KEYS = {"data": ("root",)}     # and single keys of other sections: where the data sets are (not what they are)


def overlay_config(config, path, every_section=False):
    """``config`` with the ``sampling``, ``eval`` and ``compute`` sections of the file at ``path`` laid over it (key
    by key), and ``data.root`` (the folder the data sets are read from: the run's data may have moved).  Any other
    section or key is refused: the network and data of a trained run come from the run itself.  ``every_section``
    (``--resume_training --config``): every section of the file is laid over ``config``, key by key."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping of keys to values, got {type(raw).__name__}")
    allowed = f"{', '.join(OVERLAY_SECTIONS)} and {', '.join(f'{s}.{k}' for s, ks in OVERLAY_KEYS.items() for k in ks)}"
    other = [] if every_section else [key_name(k) for k in raw if k not in OVERLAY_SECTIONS and k not in OVERLAY_KEYS]
    if other:
        raise ConfigError(f"{path}: on a trained run --config may set only {allowed} (the network and data come "
                          f"from the run); it sets {other[0]}")
    merged = config_to_dict(config)
    for section, values in raw.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: {section} must be a mapping of keys to values, got {type(values).__name__}")
        if section not in merged:
            raise ConfigError(f"{path}: unknown config section {key_name(section)!r}")
        if section in OVERLAY_KEYS and not every_section:
            refused = [key_name(k) for k in (values or {}) if k not in OVERLAY_KEYS[section]]
            if refused:
                raise ConfigError(f"{path}: on a trained run --config may set only {allowed} (the network and data "
                                  f"come from the run); it sets {section}.{refused[0]}")
        merged[section].update(values or {})
    try:
        return config_from_dict(merged)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def config_to_dict(cfg):
    return dataclasses.asdict(cfg)


def dump_config(cfg, path):
    """Write the full config (defaults included) as plain YAML, atomically."""
    text = yaml.safe_dump(config_to_dict(cfg), default_flow_style=False, sort_keys=False)
    atomic_write(path, text.encode())
