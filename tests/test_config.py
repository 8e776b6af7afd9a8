"""Config loading: every shipped config loads; bad keys, types and values are one-line ConfigErrors naming the key;
dump -> load round-trips; and, property-based, any nested dict or YAML text gives a Config or a ConfigError."""
import dataclasses
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs import Config, config_from_dict, config_to_dict, dump_config, load_config
from configs.schema import CONFIG_DIR
from errors import ConfigError
from conftest import tiny_digits_config

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
    ({"trainig": {}}, r"^unknown config key trainig \(allowed in the top level: data, model, optim, sampling, "
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
    with pytest.raises(ConfigError, match=r"^malformed YAML in .*evil\.yml: could not determine a constructor"):
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


# ----------------------------------------------------------------------------------------- property-based tests

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
FIELDS = {name: [f.name for f in dataclasses.fields(tp)] for name, tp in SECTIONS.items()}

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10, max_value=300),
                    st.integers(min_value=-(10 ** 400), max_value=10 ** 400), st.floats(allow_nan=True),
                    st.floats(min_value=1e-6, max_value=1e3), st.text(max_size=8),
                    st.sampled_from(["dsm", "ssm", "Adam", "SGD", "MNIST", "DIGITS", "bf16", "ring", "1e-3", "nan",
                                     "inf", "-1e999", "0x10", "true"]))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3), max_leaves=6)


@st.composite
def config_dicts(draw):
    """Nested dicts mostly shaped like a config: real section and key names, some unknown ones, any values."""
    raw = {}
    for section in draw(st.lists(st.sampled_from(sorted(FIELDS)) | st.text(max_size=6), max_size=6)):
        if draw(st.integers(0, 9)) == 0:
            raw[section] = draw(anything)
            continue
        keys = draw(st.lists(st.sampled_from(FIELDS.get(section, ["x"])) | st.text(max_size=6), max_size=5))
        raw[section] = {k: draw(scalars) for k in keys}
    return raw


def check_config_or_config_error(fn, *args):
    try:
        cfg = fn(*args)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))          # one clear line
        return None
    assert isinstance(cfg, Config)
    for section in SECTIONS:                                        # validated types and finite numbers
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, float):
                assert math.isfinite(value)
    return cfg


@settings(max_examples=200, deadline=None)
@given(config_dicts())
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
