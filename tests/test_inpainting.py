"""Inpainting: the masks of sampling/masks.py, their config keys, and ``--test`` with each mask end to end."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import main_in_process, tiny_digits_config, write_yaml
from PIL import Image

from configs import config_from_dict
from datasets import get_dataset
from errors import ConfigError
from reports.outputs import grid_image
from sampling.masks import MASK_KINDS, inpainting_mask

SHAPES = [(1, 8, 8), (3, 6, 10)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_shape_values_and_channels(kind, shape):
    m = inpainting_mask(kind, shape)
    assert m.shape == shape and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m == m[:1]).all()                                   # shared over channels
    assert 0 < m.sum() < m.numel()                              # something observed, something hidden


@pytest.mark.parametrize("shape", SHAPES)
def test_left_half_is_the_official_mask(shape):
    old = torch.zeros(4, *shape)
    old[..., : shape[2] // 2] = 1                               # the mask the runner built before
    assert torch.equal(inpainting_mask("left_half", shape).expand_as(old), old)


@pytest.mark.parametrize("shape", SHAPES)
def test_top_half(shape):
    m = inpainting_mask("top_half", shape)
    assert (m[:, : shape[1] // 2] == 1).all() and (m[:, shape[1] // 2:] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_centre_box_hides_about_fraction_in_the_centre(shape, fraction):
    c, h, w = shape
    m = inpainting_mask("centre_box", shape, fraction)
    hidden = (m[0] == 0).nonzero()
    rows, cols = hidden[:, 0], hidden[:, 1]
    bh, bw = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert len(hidden) == bh * bw                               # one solid box
    assert abs(int(rows.min()) - (h - int(rows.max()) - 1)) <= 1    # centred
    assert abs(int(cols.min()) - (w - int(cols.max()) - 1)) <= 1
    assert abs(bh * bw / (h * w) - fraction) < 0.2


def test_random_pixels_fraction_seed_and_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    big = inpainting_mask("random_pixels", (3, 100, 100), 0.3, seed=5)
    assert torch.equal(torch.get_rng_state(), before)           # the global random state is untouched
    assert abs(float((big[0] == 0).float().mean()) - 0.3) < 0.03
    assert torch.equal(big, inpainting_mask("random_pixels", (3, 100, 100), 0.3, seed=5))
    assert not torch.equal(big, inpainting_mask("random_pixels", (3, 100, 100), 0.3, seed=6))
    for shape in SHAPES:                                        # small images: mostly hidden / mostly observed
        assert inpainting_mask("random_pixels", shape, 0.9).mean() < 0.5
        assert inpainting_mask("random_pixels", shape, 0.1).mean() > 0.5


@pytest.mark.parametrize("bad", [dict(kind="bottom_half"), dict(shape=(8, 8)), dict(shape=(1, 0, 8)),
                                 dict(fraction=0.0), dict(fraction=1.0)])
def test_mask_rejects_bad_arguments(bad):
    args = dict(kind="centre_box", shape=(1, 8, 8), fraction=0.5) | bad
    with pytest.raises(ValueError):
        inpainting_mask(args["kind"], args["shape"], args["fraction"])


def test_config_defaults_and_validation():
    smp = config_from_dict({}).sampling
    assert (smp.inpainting_mask, smp.inpainting_fraction) == ("left_half", 0.5)
    for kind in MASK_KINDS:                                     # the config accepts exactly the mask kinds
        assert config_from_dict({"sampling": {"inpainting_mask": kind}}).sampling.inpainting_mask == kind
    with pytest.raises(ConfigError, match="sampling.inpainting_mask must be one of"):
        config_from_dict({"sampling": {"inpainting_mask": "bottom_half"}})
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ConfigError, match=r"sampling.inpainting_fraction must be in \(0, 1\)"):
            config_from_dict({"sampling": {"inpainting_fraction": bad}})
    with pytest.raises(ConfigError, match="sampling.inpainting_fraction must be of type float"):
        config_from_dict({"sampling": {"inpainting_fraction": "half"}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained digits run (``--test`` overlays each case's sampling section on it)."""
    import main as cli
    root = tmp_path_factory.mktemp("inpaint")
    cfg = tiny_digits_config()
    path = write_yaml(root / "train.yml", cfg)
    assert cli.main(["--config", path, "--doc", "d", "--run", str(root / "run")]) == 0
    return root, cfg


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_inpainting_cli_with_each_mask(trained, capfd, kind):
    root, cfg = trained
    sampling = {"inpainting": True, "inpainting_mask": kind, "inpainting_fraction": 0.4, "n_samples": 4,
                "n_steps_each": 2, "gif_every": 1}
    overlay = write_yaml(root / f"{kind}.yml", {"sampling": sampling})
    out = root / f"out_{kind}"
    rc, err = main_in_process(capfd, "--test", "--config", overlay, "--doc", "d", "--run", root / "run",
                              "-o", out, "--seed", 7)
    assert rc == 0, err
    for name in ("inpainting.png", "inpainting.pth", "inpainting.json", "movie.gif"):
        assert (out / name).is_file(), name
    samples = torch.load(out / "inpainting.pth", weights_only=True)           # (k*k, C, H, W), k = 2
    assert samples.shape == (4, 1, 8, 8)
    _, test = get_dataset(config_from_dict(cfg).data, str(root / "run"))
    refs = torch.stack([test[i][0] for i in range(2)])
    mask = inpainting_mask(kind, (1, 8, 8), 0.4, seed=7).bool()
    observed = mask.expand_as(samples)
    # observed pixels: the reference plus the last level's noise (sigma_L = 0.05), clamped to [0, 1]
    diff = (samples - refs.repeat_interleave(2, dim=0))
    assert diff[observed].abs().max() < 6 * 0.05 and diff[observed].abs().mean() < 0.06
    assert diff[~observed].abs().mean() > diff[observed].abs().mean()

    # the figure: one row per reference: the reference, the masked input (hidden pixels mid grey), its completions
    masked = torch.where(mask, refs, torch.full_like(refs, 0.5))
    rows = torch.cat([refs.unsqueeze(1), masked.unsqueeze(1), samples.view(2, 2, 1, 8, 8)], 1).flatten(0, 1)
    assert np.array_equal(np.asarray(Image.open(out / "inpainting.png")), np.asarray(grid_image(rows, 4)))

    report = json.loads((out / "inpainting.json").read_text())
    assert (report["mask"], report["fraction"], report["seed"]) == (kind, 0.4, 7)
    hidden = ~mask
    assert report["hidden_values"] == int(hidden.sum())
    sq = (samples.double().view(2, 2, 1, 8, 8) - refs.double().unsqueeze(1)) ** 2
    per = sq[:, :, hidden].mean(-1)                                            # (reference, completion)
    assert report["mse"] == pytest.approx(float(per.mean()), rel=1e-9)
    assert report["psnr"] == pytest.approx(10 * math.log10(1 / float(per.mean())), rel=1e-9)
    for i, row in enumerate(report["per_reference"]):
        assert row["reference"] == i
        assert row["mse"] == pytest.approx(float(per[i].mean()), rel=1e-9)
        assert row["psnr"] == pytest.approx(10 * math.log10(1 / float(per[i].mean())), rel=1e-9)
        assert row["mse_per_completion"] == pytest.approx(per[i].tolist(), rel=1e-9)
