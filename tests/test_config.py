"""Config loading: every shipped config loads; bad keys, types and values are one-line ConfigErrors naming the key;
every int is range-checked; duplicate YAML keys are refused; messages show only a short excerpt of a bad value;
dump -> load round-trips; and, property-based, any nested dict or YAML text gives a Config or a short ConfigError."""
import dataclasses
import json
import math
import re
import time
import typing

import pytest
import yaml
from conftest import tiny_digits_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs import Config, checks, config_from_dict, config_to_dict, dump_config, load_config
from configs.checks import INT64_MAX, INT64_MIN
from configs.files import CONFIG_DIR
from errors import ConfigError, excerpt

SHIPPED = sorted(CONFIG_DIR.glob("*.yml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    for section, values in raw.items():                    # every value written in the file is the loaded one
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"
    dump_config(cfg, tmp_path / "config.yml")
    assert load_config(tmp_path / "config.yml") == cfg
    assert list(tmp_path.iterdir()) == [tmp_path / "config.yml"]           # no temporary file left


def test_official_anneal_yml_keeps_the_official_values():
    cfg = load_config(CONFIG_DIR / "anneal.yml")
    assert (cfg.training.batch_size, cfg.training.n_iters, cfg.training.snapshot_freq) == (128, 200001, 5000)
    assert (cfg.model.sigma_begin, cfg.model.sigma_end, cfg.model.num_classes, cfg.model.ngf) == (1.0, 0.01, 10, 64)
    assert isinstance(cfg.model.sigma_begin, float) and cfg.optim.lr == 0.001


@pytest.mark.parametrize("raw, message", [
    ({"trainig": {}}, r"^unknown config key trainig \(allowed in the top level: compute, data, eval, model, optim, sampling, "
                      r"toy, training\)$"),
    ({"training": {"batchsize": 3}}, r"^unknown config key training\.batchsize \(allowed in training: .*batch_size"),
    ({"model": {"n gf": 3}}, r"^unknown config key model\.'n gf' \(allowed in model: "),
    ({7: {}}, r"^unknown config key 7 \(allowed in the top level: "),
    ({"training": {"batch_size": "big"}}, r"^training\.batch_size must be of type int, got str 'big'$"),
    ({"training": {"batch_size": 8.0}}, r"^training\.batch_size must be of type int, got float 8\.0$"),
    ({"training": {"batch_size": True}}, r"^training\.batch_size must be of type int, got bool True$"),
    ({"training": {"batch_size": 0}}, r"^training\.batch_size must be > 0, got 0$"),
    ({"training": {"algo": "mle"}}, r"^training\.algo must be one of dsm, ssm; got 'mle'$"),
    ({"training": [1, 2]}, r"^training must be a mapping of keys to values, got list$"),
    ({"optim": {"lr": -0.1}}, r"^optim\.lr must be > 0, got -0\.1$"),
    ({"optim": {"lr": float("nan")}}, r"^optim\.lr must be a finite number, got nan$"),
    ({"optim": {"lr": "1e999"}}, r"^optim\.lr must be a finite number, got inf$"),
    ({"optim": {"lr": 10 ** 400}}, r"^optim\.lr must be a finite number, got inf$"),
    ({"optim": {"beta1": 1.0}}, r"^optim\.beta1 must be in \[0, 1\), got 1\.0$"),
    ({"model": {"sigma_begin": 0.01, "sigma_end": 1}},
     r"^model\.sigma_end \(1\.0\) must not exceed model\.sigma_begin \(0\.01\)$"),
    ({"model": {"num_classes": -3}}, r"^model\.num_classes must be > 0, got -3$"),
    ({"data": {"channels": 2}}, r"^data\.channels must be one of 1, 3; got 2$"),
    ({"data": {"dataset": "IMAGENET"}}, r"^data\.dataset must be one of MNIST, .*; got 'IMAGENET'$"),
    ({"data": {"root": 5}}, r"^data\.root must be of type str, got int 5$"),
    ({"sampling": {"n_steps_each": 0}}, r"^sampling\.n_steps_each must be > 0, got 0$"),
    ({"toy": {"sigma_begin": 1, "sigma_end": 2}}, r"^toy\.sigma_end \(2\.0\) must not exceed toy\.sigma_begin"),
    ([1, 2], r"^config must be a mapping of keys to values, got list$"),
])
def test_bad_keys_types_and_values_are_one_clear_error(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_numeric_strings_are_floats_and_defaults_fill_the_rest():
    cfg = config_from_dict({"optim": {"lr": "1e-3"}, "model": {"sigma_begin": 1}})
    assert cfg.optim.lr == 0.001 and cfg.model.sigma_begin == 1.0 and isinstance(cfg.model.sigma_begin, float)
    assert cfg == dataclasses.replace(Config(), optim=dataclasses.replace(Config().optim, lr=0.001))


@pytest.mark.parametrize("content, message", [
    (None, r"^config file not found|^cannot read config .*missing\.yml: No such file or directory$"),
    (b"", r"^config .*bad\.yml is empty$"),
    (b"# only a comment\n", r"^config .*bad\.yml is empty$"),
    (b"training: {batch_size: 3\n", r"^malformed YAML in .*bad\.yml: "),
    (b"training:\n  batch_size: 3\n bad indent: 1\n", r"^malformed YAML in .*bad\.yml: "),
    (b"when: 2019-02-30\n", r"^malformed YAML in .*bad\.yml: "),             # an impossible date
    (b"\xff\xfe\x00garbage", r"^config .*bad\.yml is not a UTF-8 text file"),
    (b"- a\n- b\n", r"^.*bad\.yml: config must be a mapping of keys to values, got list$"),
    (b"training:\n  lr: 0.1\n", r"^.*bad\.yml: unknown config key training\.lr "),
])
def test_load_config_file_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / ("missing.yml" if content is None else "bad.yml")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_yaml_tags_never_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yml"
    path.write_text(f"training: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
                    f"['{marker}']]\n")
    with pytest.raises(ConfigError, match=r"^malformed YAML in .*evil\.yml: the Python tag "
                                          r"!!python/object/apply:pathlib\.Path\.touch at line 1 is refused"):
        load_config(path)
    assert not marker.exists()


def test_dump_config_writes_plain_yaml_atomically(tmp_path, monkeypatch):
    cfg = config_from_dict(tiny_digits_config())
    path = tmp_path / "config.yml"
    dump_config(cfg, path)
    text = path.read_text()
    assert "!!python" not in text and yaml.safe_load(text) == config_to_dict(cfg)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(yaml, "safe_dump", broken)
    with pytest.raises(OSError):
        dump_config(config_from_dict({}), path)
    assert path.read_text() == text and list(tmp_path.iterdir()) == [path]      # old file intact, no temp file


# ------------------------------------------------------------------------------------ duplicate keys in YAML

@pytest.mark.parametrize("text, message", [
    ("training:\n  batch_size: 3\ndata:\n  image_size: 8\ntraining:\n  n_iters: 5\n",
     r"duplicate key training at line 5 \(first at line 1\)"),                      # a repeated section
    ("training:\n  batch_size: 3\n  n_iters: 4\n  batch_size: 5\n",
     r"duplicate key training\.batch_size at line 4 \(first at line 2\)"),
    ("model: {ngf: 8, ngf: 8}\n", r"duplicate key model\.ngf at line 1 \(first at line 1\)"),     # even the same value
    ("training:\n  batch_size:\n    a:\n      b: 1\n      b: 2\n",
     r"duplicate key training\.batch_size\.a\.b at line 5 \(first at line 4\)"),   # nested, in a bad value too
    ("training:\n  batch_size: [1, {x: 1, x: 2}]\n",
     r"duplicate key training\.batch_size\[1\]\.x at line 2 \(first at line 2\)"),
    ("training:\n  1: a\n  true: b\n", r"duplicate key training\.True at line 3 \(first at line 2\)"),  # 1 == True
    ("optim:\n  lr: 0.1\nmodel:\n  ngf: 8\n  ngf: 9\noptim:\n  lr: 0.2\n",
     r"duplicate key model\.ngf at line 5 \(first at line 4\)"),                   # the first repeat by line
])
def test_duplicate_yaml_keys_are_refused_naming_the_key_and_line(tmp_path, text, message):
    path = tmp_path / "dup.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^malformed YAML in .*dup\.yml: {message}$"):
        load_config(path)


def test_yaml_merge_keys_may_still_override(tmp_path):
    path = tmp_path / "merge.yml"
    path.write_text("model: &m {sigma_begin: 2.0, sigma_end: 0.5}\ntoy:\n  <<: *m\n  sigma_end: 0.25\n")
    cfg = load_config(path)
    assert (cfg.model.sigma_begin, cfg.model.sigma_end, cfg.toy.sigma_begin, cfg.toy.sigma_end) == (2.0, 0.5, 2.0, 0.25)


# ------------------------------------------------------------------------------------------ integer ranges

def int_fields():
    """("section.key", lowest, highest) of every int field, from the schema itself (so a new field is covered)."""
    out = []
    for section, tp in ((f.name, f.type) for f in dataclasses.fields(Config)):
        for name, hint in typing.get_type_hints(tp).items():
            if hint in (int, typing.Optional[int]):
                low, high, _ = checks.INT_BOUNDS.get(f"{section}.{name}", checks.DEFAULT_INT_BOUNDS)
                out.append((f"{section}.{name}", low, high))
    return out


INT_FIELDS = int_fields()


def one_value(key_path, value):
    section, key = key_path.split(".")
    return {section: {key: value}}


def test_every_int_bound_fits_a_64_bit_integer():
    assert len(INT_FIELDS) > 20 and all(f in {p for p, _, _ in INT_FIELDS} for f in checks.INT_BOUNDS)
    for path, low, high in INT_FIELDS:
        assert INT64_MIN <= low <= high <= INT64_MAX, path
    assert checks.INT_BOUNDS["toy.seed"][:2] == (0, 2 ** 32 - 1)            # numpy's seed range


@pytest.mark.parametrize("path, low, high", INT_FIELDS, ids=[p for p, _, _ in INT_FIELDS])
def test_every_int_field_is_range_checked(path, low, high):
    if path != "data.channels":                                                # a choice of 1 or 3
        assert getattr(getattr(config_from_dict(one_value(path, high)), path.split(".")[0]), path.split(".")[1]) == high
    for bad in {high + 1, high * 10 ** 6, INT64_MAX + 1, 2 ** 64, 10 ** 400, 10 ** 5000, -(10 ** 5000),
                INT64_MIN - 1, low - 1}:
        if low <= bad <= high:
            continue
        with pytest.raises(ConfigError, match=rf"^{re.escape(path)} must ") as e:
            config_from_dict(one_value(path, bad))
        msg = str(e.value)
        assert len(msg) < 200 and "\n" not in msg, msg
        if bad > high and path != "data.channels":
            assert f"must be <= {high} (" in msg, msg


@pytest.mark.parametrize("raw, message", [
    ({"training": {"batch_size": 65537}}, r"^training\.batch_size must be <= 65536 \(MAX_BATCH_SIZE\), got 65537$"),
    ({"model": {"ngf": 10 ** 9}}, r"^model\.ngf must be <= 1024 \(MAX_WIDTH\), got 1000000000$"),
    ({"model": {"num_classes": 10 ** 6}}, r"^model\.num_classes must be <= 10000 \(MAX_NOISE_LEVELS\), got 1000000$"),
    ({"data": {"image_size": 2 ** 40}}, r"^data\.image_size must be <= 1024 \(MAX_IMAGE_SIZE\), got 1099511627776$"),
    ({"training": {"num_workers": 1000}}, r"^training\.num_workers must be <= 256 \(MAX_NUM_WORKERS\), got 1000$"),
    ({"toy": {"seed": 2 ** 32}}, r"^toy\.seed must be <= 4294967295 \(numpy's seeds are 0 \.\. 2\*\*32 - 1\), "
                                 r"got 4294967296$"),
    ({"toy": {"seed": -1}}, r"^toy\.seed must be >= 0, got -1$"),
    ({"training": {"n_iters": 2 ** 63}}, r"^training\.n_iters must be <= 9223372036854775807 \(the largest 64-bit "
                                         r"integer\), got 9223372036854775808$"),
    ({"model": {"z_dim": -(2 ** 63) - 1}}, r"^model\.z_dim must be >= -9223372036854775808 "),
    ({"training": {"n_iters": 10 ** 400}}, r"^training\.n_iters must be <= 9223372036854775807 \(the largest 64-bit "
                                           r"integer\), got 1{1}0{59}\.\.\. \(401 digits\)$"),
    ({"training": {"batch_size": -(10 ** 30000)}}, r"^training\.batch_size must be > 0, got <-int of about 30001 "),
])
def test_int_bounds_are_named_in_the_message(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_integers_too_long_for_python_are_a_yaml_error(tmp_path):
    path = tmp_path / "long.yml"
    for value in ("9" * 5000, "0x" + "f" * 5000, "1:" * 3000 + "1"):            # decimal, hex, sexagesimal
        path.write_text(f"training:\n  n_iters: {value}\n")
        with pytest.raises(ConfigError, match=r"^malformed YAML in .*long\.yml: the integer at line 2 has \d+ "
                                              r"characters \(at most 4300\)$"):
            load_config(path)


# ------------------------------------------------------------------------------ short excerpts of bad values

def alias_bomb(depth=9, width=9):
    """YAML whose last anchor expands to width**depth items (9**9 ~ 390 million: gigabytes as a repr)."""
    levels = [f"&a0 [{', '.join(['lol'] * width)}]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return f"[{', '.join(levels)}]"


@pytest.mark.parametrize("where", ["training:\n  batch_size: {}\n", "training:\n  algo: {}\n", "optim:\n  lr: {}\n",
                                   "toy:\n  seed: {}\n", "data:\n  root: {}\n", "training: {}\n",
                                   "training:\n  {}: 1\n", "{}\n"])
def test_an_alias_bomb_gives_a_short_error_quickly(tmp_path, where):
    path = tmp_path / "bomb.yml"
    path.write_text(where.format(alias_bomb()))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    msg = str(e.value).replace(str(path), "")
    assert len(msg) < 300 and "\n" not in msg, msg


@pytest.mark.parametrize("value, shown", [
    ("x" * 10 ** 6, r"'x{59}\.\.\. \(1000000 characters\)"),
    (["y" * 100] * 1000, r"\['y{58}\.\.\. \(1000 items\)"),
    ({"k" * 100: 1}, r"\{'k{58}\.\.\. \(1 key\)"),
    (10 ** 5000, r"1{1}0{59}\.\.\. \(5001 digits\)"),
], ids=["long-str", "long-list", "long-key", "huge-int"])
def test_type_errors_show_a_short_excerpt(value, shown):
    for key in ("training.batch_size", "optim.lr", "training.algo", "data.root"):
        if key == "data.root" and isinstance(value, str):                   # any string is a folder name
            continue
        with pytest.raises(ConfigError) as e:
            config_from_dict(one_value(key, value))
        msg = str(e.value)
        assert len(msg) < 150, msg
        assert msg.startswith(f"{key} must be "), msg
        if not (key == "optim.lr" and isinstance(value, int)):               # an int is a (too big) float: inf
            assert re.search(rf"[,;] got (\w+ )?{shown}$", msg), msg


def test_long_keys_and_choices_are_cut(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown config key training\.'k{39}\.\.\. \(5000 characters\) "
                                          r"\(allowed in training: .*\(\d+ keys in all\)\)$"):
        config_from_dict({"training": {"k" * 5000: 1}})
    with pytest.raises(ConfigError, match=r"^unknown config key 'n\\ng\\nf\\n"):
        config_from_dict({"n\ng\nf\n" * 1000: {}})
    with pytest.raises(ConfigError, match=r"^training\.algo must be one of dsm, ssm; got 'd{59}\.\.\. \(10000 ch"):
        config_from_dict({"training": {"algo": "d" * 10000}})
    path = tmp_path / "tag.yml"
    path.write_text(f"training: !{'t' * 100000} 1\n")
    with pytest.raises(ConfigError, match=r"^malformed YAML in .*tag\.yml: could not determine a constructor for the "
                                          r"tag '!t+\.\.\. \(\d+ characters\)$") as e:
        load_config(path)
    assert len(str(e.value).replace(str(path), "")) < 200


def test_excerpt_is_repr_when_short_and_bounded_otherwise():
    import datetime
    for value in (None, True, -3, 8.0, "big", "a'b\n", b"\x00", [1, "x"], (1,), (), set(), {2}, frozenset({1}),
                  frozenset(), {"a": [1, {"b": None}]}, 10 ** 50, datetime.date(2019, 2, 28)):
        assert excerpt(value) == repr(value)
    cyclic = []
    cyclic.append(cyclic)
    bomb = ["lol"]
    for _ in range(40):
        bomb = [bomb, bomb]                         # 2**40 leaves
    start = time.perf_counter()
    for value, size in ((cyclic, "1 item"), (bomb, "2 items"), ("é\n" * 10 ** 7, "20000000 characters"),
                        (7 ** 10 ** 4, "8451 digits"), (b"\xff" * 10 ** 6, "1000000 bytes")):
        text = excerpt(value)
        assert len(text) == 60 + 6 + len(size) and text.endswith(f"... ({size})"), text
    assert excerpt(-3 ** 10 ** 6) == "<-int of about 477122 digits>"           # too long even to count exactly
    assert time.perf_counter() - start < 5          # bounded work: the bomb has 2**40 leaves, the number 10**6 digits
    assert excerpt("x" * 100, limit=10) == "'xxxxxxxxx... (100 characters)"


# ----------------------------------------------------------------------------------------- property-based tests

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
FIELDS = {name: [f.name for f in dataclasses.fields(tp)] for name, tp in SECTIONS.items()}

BOUNDARY_INTS = sorted({v for _, low, high in INT_FIELDS for v in (low - 1, low, high, high + 1)})
yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10, max_value=300),
                         st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.sampled_from(BOUNDARY_INTS),
                         st.floats(allow_nan=True), st.floats(min_value=1e-6, max_value=1e3), st.text(max_size=8),
                         st.sampled_from(["dsm", "ssm", "Adam", "SGD", "MNIST", "DIGITS", "bf16", "ring", "1e-3",
                                          "nan", "inf", "-1e999", "0x10", "true"]))
long_scalars = st.one_of(st.integers(min_value=-(10 ** 400), max_value=10 ** 400).filter(lambda v: abs(v) > 2 ** 64),
                         st.text(min_size=50, max_size=400))
# ints beyond Python's 4300-digit str() limit (no YAML text can hold them; a dict can)
huge_ints = st.sampled_from([5000, -30000]).map(lambda e: 10 ** e if e > 0 else -(10 ** -e))


def anything(values):
    return st.recursive(values, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=80) | st.integers(), inner, max_size=3), max_leaves=10)


@st.composite
def config_dicts(draw, long_values=long_scalars):
    """Nested dicts mostly shaped like a config: real section and key names (4 in 5), some unknown ones (short, long,
    odd); values: scalars of the right and wrong kinds, ints at and beyond the bounds, long values (1 in 4) and nested
    lists and dicts (1 in 10), so that every kind of check is reached often."""
    def one_of_weighted(*choices):          # (weight, strategy) pairs
        pick = draw(st.integers(0, sum(w for w, _ in choices) - 1))
        for w, strategy in choices:
            if pick < w:
                return draw(strategy)
            pick -= w

    raw = {}
    for _ in range(draw(st.integers(0, 6))):
        section = one_of_weighted((4, st.sampled_from(sorted(FIELDS))), (1, st.text(max_size=80)))
        if draw(st.integers(0, 9)) == 0:
            raw[section] = draw(anything(yaml_scalars | long_values))
            continue
        raw[section] = {}
        for _ in range(draw(st.integers(0, 5))):
            key = one_of_weighted((4, st.sampled_from(FIELDS.get(section, ["x"]))), (1, st.text(max_size=80)))
            raw[section][key] = one_of_weighted((13, yaml_scalars), (5, long_values),
                                                (2, anything(yaml_scalars | long_values)))
    return raw


def check_config_or_config_error(fn, *args):
    """``fn(*args)`` gives a valid Config or a ConfigError of one short line; any other exception fails the test."""
    try:
        cfg = fn(*args)
    except ConfigError as e:
        msg = str(e).replace(str(args[0]), "") if fn is load_config else str(e)     # the file's name is the user's
        assert msg and "\n" not in msg and len(msg) < 300, repr(msg)              # one clear, short line
        return None
    assert isinstance(cfg, Config)
    for section in SECTIONS:                                        # validated types and finite numbers
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, float):
                assert math.isfinite(value)
    for path, low, high in INT_FIELDS:                              # every int within its bounds
        value = getattr(getattr(cfg, path.split(".")[0]), path.split(".")[1])
        assert value is None or low <= value <= high, (path, value)
    return cfg


@settings(max_examples=200, deadline=None)
@given(config_dicts(long_values=long_scalars | huge_ints))
def test_any_nested_dict_gives_a_config_or_a_config_error(raw):
    cfg = check_config_or_config_error(config_from_dict, raw)
    if cfg is not None:          # a valid config survives the plain-YAML round trip that dump/load_config make
        assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=60),
                      config_dicts().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                      st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_any_yaml_file_gives_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "random.yml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    check_config_or_config_error(load_config, path)


@st.composite
def yaml_with_repeats(draw):
    """YAML text whose sections and keys come from small sets, so that they often repeat; and the line of the first
    repeat (None when nothing repeats)."""
    lines, first_repeat, sections_seen = [], None, set()
    for section in draw(st.lists(st.sampled_from(["training", "model", "toy"]), min_size=1, max_size=4)):
        lines.append(f"{section}:")
        if section in sections_seen and first_repeat is None:
            first_repeat = len(lines)
        sections_seen.add(section)
        keys_seen = set()
        for key in draw(st.lists(st.sampled_from(FIELDS[section][:4]), max_size=4)):
            lines.append(f"  {key}: {json.dumps(draw(yaml_scalars))}")
            if key in keys_seen and first_repeat is None:
                first_repeat = len(lines)
            keys_seen.add(key)
    return "\n".join(lines) + "\n", first_repeat


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_with_repeats())
def test_any_repeated_yaml_key_is_refused_at_its_line(tmp_path, text_and_line):
    text, first_repeat = text_and_line
    path = tmp_path / "repeats.yml"
    path.write_text(text, encoding="utf-8")
    if first_repeat is not None:
        with pytest.raises(ConfigError, match=rf"^malformed YAML in .*repeats\.yml: duplicate key [\w.]+ at line "
                                              rf"{first_repeat} \(first at line \d+\)$"):
            load_config(path)
    else:
        try:
            check_config_or_config_error(load_config, path)
        except ConfigError as e:                                    # pragma: no cover - the check returns None
            raise AssertionError(e) from e


def test_mnist_small_differs_from_the_official_mnist_config_only_where_it_says():
    """mnist_small.yml (the CPU-sized quality-against-cost model) is anneal.yml with a smaller network, batch and run,
    EMA, no DataLoader workers, and the quick --eval settings: every other value is the official one."""
    import dataclasses
    small, official = load_config(CONFIG_DIR / "mnist_small.yml"), load_config(CONFIG_DIR / "anneal.yml")
    changed = {}
    for section in ("training", "data", "model", "optim", "sampling", "compute"):
        a, b = dataclasses.asdict(getattr(small, section)), dataclasses.asdict(getattr(official, section))
        changed.update({f"{section}.{k}": v for k, v in a.items() if b[k] != v})
    assert changed == {"training.batch_size": 64, "training.n_iters": 2000, "training.snapshot_freq": 1000,
                       "training.num_workers": 0, "training.log_freq": 100, "model.ngf": 16, "model.ema": True,
                       "model.ema_rate": 0.99}
