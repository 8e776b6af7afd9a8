"""What runners declare (runners/base.py): their networks, which configs those can take, and torchrun support."""
import time

import pytest
import torch
from conftest import tiny_digits_config

from configs import config_from_dict
from errors import ConfigError
from models import CondRefineNetDilated, RefineNetDilated, ResScore
from runners import RUNNERS, AnnealRunner, BaselineRunner, ScoreNetRunner, ToyRunner


@pytest.mark.parametrize("runner, change, message", [
    (AnnealRunner, {"data": {"image_size": 7}},
     r"^data\.image_size must be a positive even int: .* got 7 \(the AnnealRunner network\)$"),
    (BaselineRunner, {"data": {"image_size": 27}}, r"^data\.image_size must be a positive even int: .* got 27 "),
    (AnnealRunner, {"model": {"ngf": 1}}, r"^model\.ngf must be an int >= 2 "),
    (ScoreNetRunner, {"data": {"image_size": 30}},
     r"^data\.image_size must be a multiple of 4 for ResScore .*got 30x30 \(the ScoreNetRunner network\)$"),
    (ScoreNetRunner, {"model": {"nef": 16, "ndf": 32}}, r"^model\.nef must equal ndf in ResScore"),
    (ScoreNetRunner, {"model": {"nef": 12, "ndf": 12}}, r"^model\.nef must be a positive multiple of 8"),
    (ToyRunner, {"data": {"image_size": 7}}, None),                 # no image network: nothing to check
    (AnnealRunner, {"data": {"image_size": 6}, "model": {"ngf": 2}}, None),
    (ScoreNetRunner, {"data": {"image_size": 12}, "model": {"nef": 8, "ndf": 8}}, None),
])
def test_check_config_refuses_what_the_network_refuses(runner, change, message):
    cfg = config_from_dict(tiny_digits_config(**change))
    if message is None:
        runner.check_config(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        runner.check_config(cfg)
    with pytest.raises((ValueError, ConfigError)):   # the rule is the network's own: building it for real fails too
        runner.build_model(cfg)(torch.rand(1, cfg.data.channels, cfg.data.image_size, cfg.data.image_size),
                                *([torch.zeros(1, dtype=torch.long)] if runner is AnnealRunner else []))


def test_scorenet_dsm_needs_a_noise_level():
    cfg = config_from_dict(tiny_digits_config(training={"algo": "dsm", "noise_std": 0.0}))
    with pytest.raises(ConfigError, match=r"^training\.algo dsm needs training\.noise_std > 0"):
        ScoreNetRunner.check_config(cfg)


def test_check_config_builds_on_the_meta_device_without_memory_or_time():
    """The widest network the config allows (ngf 1024, 10,000 levels: tens of GB): checking it allocates nothing."""
    cfg = config_from_dict(tiny_digits_config(data={"image_size": 32, "channels": 3},
                                              model={"ngf": 1024, "num_classes": 10000}))
    start = time.perf_counter()
    AnnealRunner.check_config(cfg)
    assert time.perf_counter() - start < 20


def test_runner_declarations():
    assert set(RUNNERS) == {"AnnealRunner", "BaselineRunner", "ScoreNetRunner", "ToyRunner"}
    assert {n for n, r in RUNNERS.items() if r.distributed} == {"AnnealRunner", "BaselineRunner"}
    cfg = config_from_dict(tiny_digits_config())
    assert type(AnnealRunner.build_model(cfg)) is CondRefineNetDilated
    assert type(BaselineRunner.build_model(cfg)) is RefineNetDilated
    assert type(ScoreNetRunner.build_model(config_from_dict(tiny_digits_config(model={"nef": 8, "ndf": 8})))) \
        is ResScore
    assert ToyRunner.build_model(cfg) is None
