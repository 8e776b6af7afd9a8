"""sampling.method pc and ode, and eval.bpd, end to end on a tiny digits run (--test, inpainting, --eval), and their
config errors as one line."""
import json

import numpy as np
import pytest
import torch
from conftest import main_in_process, tiny_digits_config, write_yaml
from test_eval_cli import StandInInception

import main as cli
from configs.build import config_from_dict
from errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("samplers")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(StandInInception()), str(root / "standin.pt"))
    cfg = tiny_digits_config(model={"ngf": 4})
    assert cli.main(["--config", write_yaml(root / "tiny.yml", cfg), "--doc", "s", "--run", str(root / "run")]) == 0
    return root


@pytest.mark.parametrize("sampling", [
    {"method": "pc", "n_steps_each": 1}, {"method": "pc", "predictor": "none", "n_steps_each": 2, "snr": 0.1},
    {"method": "ode", "denoise": True}, {"method": "ode", "inpainting": True}, {"method": "pc", "inpainting": True}])
def test_test_with_new_samplers(trained, tmp_path, capfd, sampling):
    over = write_yaml(tmp_path / "over.yml", {"sampling": {"n_samples": 4, **sampling}})
    out = tmp_path / "out"
    rc, err = main_in_process(capfd, "--test", "--config", over, "--doc", "s", "--run", trained / "run", "-o", out)
    assert rc == 0, err
    name = "inpainting" if sampling.get("inpainting") else "samples"
    samples = torch.load(out / f"{name}.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all() and samples.std() > 0
    assert any(f"'method': '{sampling['method']}'" in line for line in err)
    if sampling["method"] == "ode":
        assert any("ode: " in line and "network evaluations" in line for line in err)
        assert any("probability-flow ODE" in line for line in err)


def test_eval_with_ode_records_nfe_and_bpd(trained, tmp_path, capfd):
    over = write_yaml(tmp_path / "over.yml", {
        "sampling": {"method": "ode"},
        "eval": {"n_samples": 4, "batch_size": 2, "max_reference": 20, "inception_weights": str(trained / "standin.pt"),
                 "bpd": True, "bpd_n": 3, "bpd_rtol": 1e-3, "bpd_atol": 1e-3}})
    out = tmp_path / "ev"
    rc, err = main_in_process(capfd, "--eval", "--config", over, "--doc", "s", "--run", trained / "run", "-o", out)
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["sampling"]
    assert s["method"] == "ode" and s["ode_rtol"] == 1e-3 and s["ode_method"] == "dopri5" and len(s["nfe_per_batch"]) == 2
    assert all(n >= 6 for n in s["nfe_per_batch"])
    assert np.isfinite(metrics["bpd"]) and metrics["bpd_n"] == 3 and metrics["bpd_prior_mean"] == 0.5
    assert np.isfinite(metrics["fid"])


def test_eval_with_pc(trained, tmp_path, capfd):
    over = write_yaml(tmp_path / "over.yml", {
        "sampling": {"method": "pc", "n_steps_each": 1},
        "eval": {"n_samples": 2, "batch_size": 2, "max_reference": 20, "inception_weights": str(trained / "standin.pt")}})
    rc, err = main_in_process(capfd, "--eval", "--config", over, "--doc", "s", "--run", trained / "run", "-o",
                              tmp_path / "ev")
    assert rc == 0, err
    s = json.loads((tmp_path / "ev" / "metrics.json").read_text())["sampling"]
    assert (s["method"], s["predictor"], s["corrector"], s["snr"], s["n_steps_each"]) == (
        "pc", "reverse_diffusion", "langevin", 0.16, 1)
    assert "bpd" not in json.loads((tmp_path / "ev" / "metrics.json").read_text())


@pytest.mark.parametrize("raw, message", [
    ({"sampling": {"method": "ddim"}}, "sampling.method must be one of langevin, pc, ode"),
    ({"sampling": {"predictor": "euler"}}, "sampling.predictor must be one of reverse_diffusion, none"),
    ({"sampling": {"corrector": "ald"}}, "sampling.corrector must be one of langevin, none"),
    ({"sampling": {"method": "pc", "predictor": "none", "corrector": "none"}}, "does nothing"),
    ({"sampling": {"snr": 0}}, "sampling.snr"),
    ({"sampling": {"ode_method": "scipy"}}, "sampling.ode_method must be one of dopri5"),
    ({"sampling": {"ode_rtol": -1e-3}}, "sampling.ode_rtol"),
    ({"eval": {"bpd_probe": "sphere"}}, "eval.bpd_probe must be one of rademacher, gaussian"),
    ({"eval": {"bpd_n": 0}}, "eval.bpd_n"),
])
def test_config_errors_are_one_line(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(raw)
    assert "\n" not in str(info.value)


def test_check_bpd_refusal():
    from commands.evaluate import check_bpd
    from errors import UserError
    with pytest.raises(UserError, match="eval.bpd needs data.logit_transform false"):
        check_bpd(config_from_dict({"eval": {"bpd": True}, "data": {"logit_transform": True}}))
    check_bpd(config_from_dict({"eval": {"bpd": True}}))
