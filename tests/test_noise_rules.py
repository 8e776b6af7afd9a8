"""NCSNv2's Techniques 1-4 (sampling/noise_rules.py, model.scale_by_sigma, tools/noise_rules.py) against analytic
values, brute force, the sampler itself and ncsnv2's published settings."""
import math

import pytest
import torch
import yaml
from conftest import REPO, tiny_digits_config, write_yaml

from configs import config_from_dict, load_config
from configs.files import CONFIG_DIR
from datasets import get_dataset
from models import CondRefineNetDilated
from runners.anneal_runner import AnnealRunner, make_sigmas
from sampling import anneal_langevin_dynamics, geometric_sigmas
from sampling.noise_rules import (
    gamma_for_dim,
    max_pairwise_distance,
    num_levels,
    overlap,
    schedule_ratio,
    step_size_for,
    variance_ratio,
)
from tools import noise_rules as tool

# --- Technique 1 -----------------------------------------------------------------------------------------------

def test_max_pairwise_distance_finds_a_planted_pair():
    torch.manual_seed(0)
    x = torch.rand(500, 30)
    x[17], x[321] = 0, 0
    x[17, 0], x[321, 0] = -10.0, 10.0           # 20 apart; any other pair is at most sqrt(11^2 + 29) < 12.3 apart
    assert max_pairwise_distance(x, chunk=64) == pytest.approx(20.0, rel=1e-12)


@pytest.mark.parametrize("n, dim, chunk, offset", [(2, 1, 1, 0.0), (97, 5, 7, 0.0), (300, 64, 2048, 1000.0)])
def test_max_pairwise_distance_equals_brute_force(n, dim, chunk, offset):
    torch.manual_seed(n)
    x = torch.randn(n, dim, dtype=torch.float64) + offset      # a far offset: the float32 screen must not drift
    brute = float(torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").max())    # differences, no |a|^2
    assert max_pairwise_distance(x.view(n, 1, dim), chunk=chunk) == pytest.approx(brute, rel=1e-12)


def test_max_pairwise_distance_of_one_point_is_zero():
    assert max_pairwise_distance(torch.ones(1, 4)) == 0.0


# --- Technique 2 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [5, 64, 784, 3072, 12288])
def test_gamma_solves_the_phi_rule(dim):
    g = gamma_for_dim(dim)
    assert g > 1 and overlap(g, dim) == pytest.approx(0.5, abs=1e-9)
    assert overlap(g * 0.999, dim) > 0.5 > overlap(g * 1.001, dim)
    c = math.sqrt(2 * dim) * (g - 1)            # the paper's expression written out once more
    phi = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in (c + 3 * g, c - 3 * g)]
    assert phi[0] - phi[1] == pytest.approx(0.5, abs=1e-9)


def test_gamma_refuses_small_dimensions():
    with pytest.raises(ValueError, match="D must be an int >= 5"):
        gamma_for_dim(4)


def test_num_levels_keeps_the_ratio_at_most_gamma():
    g = gamma_for_dim(64)
    L = num_levels(1.0, 0.01, g)
    assert L == 16
    assert schedule_ratio(1.0, 0.01, L) <= g < schedule_ratio(1.0, 0.01, L - 1)
    assert num_levels(8.0, 1.0, 2.0) == 4                      # exactly representable: 8, 4, 2, 1
    with pytest.raises(ValueError):
        num_levels(0.01, 1.0, g)


def test_the_rule_is_close_to_ncsnv2s_published_levels():
    """ncsnv2's CIFAR-10 (sigma 50 -> 0.01, L 232) and CelebA (90 -> 0.01, L 500): the rule gives a few % fewer."""
    assert num_levels(50, 0.01, gamma_for_dim(3 * 32 * 32)) == 220
    assert num_levels(90, 0.01, gamma_for_dim(3 * 64 * 64)) == 473


# --- Technique 4 -----------------------------------------------------------------------------------------------

def test_step_size_minimises_the_variance_ratio():
    g, s_end, T = schedule_ratio(1.0, 0.01, 10), 0.01, 100
    eps = step_size_for(g, s_end, T)
    best = variance_ratio(eps, g, s_end, T)
    assert best == pytest.approx(1.018899, abs=1e-6)                       # > 1 for every eps (discretisation)
    for f in (0.9, 0.99, 1.01, 1.1):
        assert variance_ratio(eps * f, g, s_end, T) > best
    assert variance_ratio(1e-16, g, s_end, T) == pytest.approx(g ** 2, rel=1e-9)     # no step: the old variance


@pytest.mark.parametrize("sigma_begin, levels, published", [(50, 232, 6.2e-6), (90, 500, 3.3e-6)])
def test_step_size_reproduces_ncsnv2s_configs(sigma_begin, levels, published):
    """ncsnv2's cifar10.yml / celeba.yml: T = 5, step_lr 6.2e-6 / 3.3e-6 for their schedules."""
    eps = step_size_for(schedule_ratio(sigma_begin, 0.01, levels), 0.01, 5)
    assert eps == pytest.approx(published, rel=0.015)


@pytest.mark.parametrize("two_levels", [False, True])
def test_step_lr_is_the_2020_papers_eps(two_levels):
    """Run the project's sampler on N(0, sigma^2 I) (exact scores -x / sigma^2) from the previous level's variance
    gamma^2 sigma^2: after T steps the variance ratio is Eq. (6) at eps = sampling.step_lr, not at step_lr * 2."""
    s_end, g, T, step_lr = 0.5, 1.5, 5, 0.3 * 0.5 ** 2
    sigmas = [g * s_end, s_end] if two_levels else [s_end]
    torch.manual_seed(0)
    x0 = torch.randn(400000, 1) * g * sigmas[0]
    ends = {}
    anneal_langevin_dynamics(lambda x, lab: -x / torch.tensor(sigmas)[lab].view(-1, 1) ** 2, x0, sigmas,
                             n_steps_each=T, step_lr=step_lr,
                             callback=lambda info: ends.__setitem__(info["level"], info["x"].var().item()))
    measured = ends[0] / sigmas[0] ** 2
    assert measured == pytest.approx(variance_ratio(step_lr, g, s_end, T), rel=0.01)
    assert abs(measured / variance_ratio(2 * step_lr, g, s_end, T) - 1) > 0.05


# --- Technique 3 -----------------------------------------------------------------------------------------------

def test_scale_by_sigma_divides_the_output_and_keeps_the_keys():
    sigmas = geometric_sigmas(1.0, 0.01, 4)
    torch.manual_seed(0)
    plain = CondRefineNetDilated(1, 8, 8, num_classes=4)
    scaled = CondRefineNetDilated(1, 8, 8, num_classes=4, sigmas=sigmas)
    assert list(scaled.state_dict()) == list(plain.state_dict())
    scaled.load_state_dict(plain.state_dict())                          # strict: an unscaled checkpoint loads
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(scaled(x, y), plain(x, y) / sigmas.view(4, 1, 1, 1))
    with pytest.raises(ValueError, match=r"sigmas must have shape \(4,\)"):
        CondRefineNetDilated(1, 8, 8, num_classes=4, sigmas=sigmas[:3])


def test_the_runner_builds_the_scaled_network_from_the_config():
    on = config_from_dict(tiny_digits_config(model={"scale_by_sigma": True}))
    off = config_from_dict(tiny_digits_config())
    assert not off.model.scale_by_sigma and not AnnealRunner.build_model(off).scale_by_sigma
    model = AnnealRunner.build_model(on)
    torch.testing.assert_close(model.sigmas, make_sigmas(on, None))
    assert list(model.state_dict()) == list(AnnealRunner.build_model(off).state_dict())


def test_train_and_sample_with_scale_by_sigma(tmp_path, capfd):
    cfg = write_yaml(tmp_path / "scaled.yml", tiny_digits_config(model={"scale_by_sigma": True}))
    run = tmp_path / "run"
    rc, err = cli_main(capfd, "--config", cfg, "--run", run, "--doc", "scaled")
    assert rc == 0, err
    state = torch.load(run / "logs" / "scaled" / "checkpoint.pth", weights_only=True)
    plain = CondRefineNetDilated(1, 8, 8, num_classes=4).state_dict()
    assert sorted(state["model"]) == sorted(plain)                         # no sigma buffer in the checkpoint
    rc, err = cli_main(capfd, "--test", "--run", run, "--doc", "scaled", "-o", tmp_path / "out")
    assert rc == 0, err
    samples = torch.load(tmp_path / "out" / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and bool(torch.isfinite(samples).all())


def cli_main(capfd, *argv):
    from conftest import main_in_process
    return main_in_process(capfd, *argv)


# --- the command and the configs ---------------------------------------------------------------------------------

def test_the_command_on_the_digits(capsys):
    assert tool.main(["--config", "digits.yml", "--steps-each", "5"]) == 0
    out = capsys.readouterr().out
    train, _ = get_dataset(load_config(CONFIG_DIR / "digits.yml").data, "unused")
    x = train.tensors[0].flatten(1).double()
    brute = float(torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").max())
    assert f"sigma_1 = max pairwise distance = {brute:.6f}" in out and "1617 training images, D = 64" in out
    fragment = yaml.safe_load(out[out.index("model:"):])
    assert fragment["model"] == {"sigma_begin": round(brute, 4), "sigma_end": 0.01, "num_classes": 22}
    g = schedule_ratio(brute, 0.01, 22)
    assert fragment["sampling"] == {"step_lr": float(f"{step_size_for(g, 0.01, 5):.3g}"), "n_steps_each": 5}
    base = yaml.safe_load((CONFIG_DIR / "digits.yml").read_text())
    for section, values in fragment.items():                          # pasted into digits.yml it is a valid config
        base[section].update(values)
    config_from_dict(base)


@pytest.mark.parametrize("argv, message", [
    (["--config", "digits.yml", "--steps-each", "0"], "--steps-each must be a positive integer"),
    (["--config", "no_such.yml"], "config file not found: no_such.yml"),
    (["--config", "digits.yml", "--max-points", "1"], "--max-points must be at least 2"),
])
def test_the_command_refuses_bad_input_in_one_line(capsys, argv, message):
    assert tool.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_the_command_refuses_too_small_images(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "tiny.yml", {"data": {"dataset": "DIGITS", "image_size": 2, "channels": 1}})
    assert tool.main(["--config", cfg]) == 1
    assert "needs a data dimension D >= 5, this data set has D = 4" in capsys.readouterr().err


def test_the_command_on_mnist_subset(shared, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "mnist.yml", {"data": {"dataset": "MNIST", "root": str(shared / "data"),
                                                       "download": False}})
    assert tool.main(["--config", cfg, "--max-points", "300"]) == 0
    out = capsys.readouterr().out
    assert "MNIST: 300 training images (a fixed random subset of 300 of 60000), D = 784" in out
    assert yaml.safe_load(out[out.index("model:"):])["sampling"]["n_steps_each"] == 100


V2_ALL = {"model": ["sigma_begin", "num_classes", "scale_by_sigma"], "sampling": ["step_lr", "denoise"]}
V2 = {"digits_v2_t1.yml": {"model": ["sigma_begin"]}, "digits_v2_t2.yml": {"model": ["num_classes"]},
      "digits_v2_t3.yml": {"model": ["scale_by_sigma"]}, "digits_v2_t4.yml": {"sampling": ["step_lr"]},
      "digits_v2_all.yml": {"model": ["sigma_begin", "num_classes", "scale_by_sigma"],
                            "sampling": ["step_lr", "denoise"]}}


@pytest.mark.parametrize("name", sorted(V2) + ["mnist_small_v2.yml"])
def test_v2_configs_differ_from_their_base_only_by_their_techniques(name):
    """Each NCSNv2 config is its base (digits.yml; mnist_small.yml for mnist_small_v2.yml, the same training budget)
    with only its techniques' keys changed."""
    base_name = "mnist_small.yml" if name.startswith("mnist") else "digits.yml"
    base, cfg = load_config(CONFIG_DIR / base_name), load_config(CONFIG_DIR / name)
    changed = {s: sorted(k for k in vars(getattr(cfg, s)) if getattr(getattr(cfg, s), k) !=
                         getattr(getattr(base, s), k)) for s in vars(cfg)}
    assert {s: k for s, k in changed.items() if k} == {s: sorted(k) for s, k in V2.get(name, V2_ALL).items()}


@pytest.mark.parametrize("argv, message", [
    (["--config", "toy.yml"], "toy.yml is a 2-D toy config (ToyRunner): it has no image data set"),
    (["--config", "digits.yml", "--steps-each", str(10 ** 30)], "--steps-each: sampling.n_steps_each must be <="),
    (["--config", "digits.yml", "--steps-each", "x"], "argument --steps-each: invalid int value: 'x'"),
    (["--config", "digits.yml", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: --config"),
])
def test_the_script_refuses_bad_flags_and_toy_configs_in_one_line(tmp_path, argv, message):
    """Run as a script, as a user does: one ``error:`` line on stderr, a non-zero exit, nothing downloaded."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(REPO / "tools" / "noise_rules.py"), *argv], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], r.stderr
    assert not (tmp_path / "run").exists()
