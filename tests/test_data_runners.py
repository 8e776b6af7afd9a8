"""Data sets on real files, read offline through ``data.root`` (../shared/data), and the Anneal, Baseline and ScoreNet
runners trained and tested end to end on them with tiny networks.  Tests that need ../shared skip without it."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import logged_losses, main_in_process
from PIL import Image

import main as cli
from configs import load_config
from configs.schema import Data
from datasets import check_shape, data_transform, get_dataset
from errors import ConfigError, UserError
from reports.outputs import read_loss_log
from runners import AnnealRunner, BaselineRunner, ScoreNetRunner
from training.checkpoint import load_checkpoint, load_model_state


def data_cfg(shared, name, **kw):
    roots = {"MNIST": shared / "data", "FOLDER": shared / "data" / "cifar10_png",
             "CELEBA": shared / "data" / "celeba_jpg"}
    size = {"MNIST": 28}.get(name, 32)
    channels = 1 if name == "MNIST" else 3
    return dict(dict(dataset=name, image_size=size, channels=channels, root=str(roots[name]), download=False), **kw)


def pil_to_tensor(img):
    """RGB PIL image -> (3, H, W) float in [0, 1], written out independently of torchvision."""
    return torch.tensor(np.array(img), dtype=torch.float32).permute(2, 0, 1) / 255


# ------------------------------------------------------------------------------------------------ data sets

def test_mnist_offline_is_the_real_mnist(shared):
    train, test = get_dataset(Data(**data_cfg(shared, "MNIST")), "unused")
    assert (len(train), len(test)) == (60000, 10000)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert y == 5 and test[0][1] == 7                                  # the well-known first labels
    assert x.min() == 0 and x.max() == 1                               # ToTensor: uint8 / 255
    assert int(round(float(x.sum()) * 255)) == 27525                   # pixel sum of the first training image
    big, _ = get_dataset(Data(**data_cfg(shared, "MNIST", image_size=32)), "unused")
    assert big[0][0].shape == (1, 32, 32)                              # Resize follows the config


def test_cifar10_png_folder_and_grayscale(shared):
    train, test = get_dataset(Data(**data_cfg(shared, "FOLDER")), "unused")
    assert (len(train), len(test)) == (200, 20) and len(train.classes) == 10
    x = train[0][0]
    png = Image.open(train.samples[0][0])
    assert png.size == (32, 32)
    torch.testing.assert_close(x, pil_to_tensor(png.convert("RGB")))     # lossless, no resampling at 32
    grey, _ = get_dataset(Data(**data_cfg(shared, "FOLDER", channels=1)), "unused")
    g = grey[0][0]
    assert g.shape == (1, 32, 32)
    lum = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])                 # PIL's 'L' conversion (ITU-R 601-2)
    assert (g[0] - lum).abs().max() < 1.5 / 255


def test_celeba_center_crop_140_then_resize(shared, caplog):
    cfg = Data(**data_cfg(shared, "CELEBA"))
    train, test = get_dataset(cfg, "unused")
    assert len(train) == 32 and len(test) == 32                         # no official test image: test = train
    assert "no image of the official test split" in caplog.text
    with Image.open(shared / "data" / "celeba_jpg" / "img_align_celeba" / "000001.jpg") as img:
        assert img.size == (178, 218)
        left, top = (178 - 140) // 2, (218 - 140) // 2                   # torchvision's center-crop offsets
        expected = img.convert("RGB").crop((left, top, left + 140, top + 140)).resize((32, 32), Image.BILINEAR)
    x = test[0][0]                                                      # the test transform never flips
    assert x.shape == (3, 32, 32)
    assert (x - pil_to_tensor(expected)).abs().max() <= 2 / 255                             # PIL vs torchvision antialias rounding


def test_random_flip_only_in_training_and_only_when_asked(shared):
    flip, _ = get_dataset(Data(**data_cfg(shared, "FOLDER", random_flip=True)), "unused")
    plain, test = get_dataset(Data(**data_cfg(shared, "FOLDER")), "unused")
    x = plain[3][0]
    assert not torch.equal(x, x.flip(-1))
    draws = [flip[3][0] for _ in range(30)]
    assert all(torch.equal(d, x) or torch.equal(d, x.flip(-1)) for d in draws)
    n_flipped = sum(torch.equal(d, x.flip(-1)) for d in draws)
    assert 3 <= n_flipped <= 27                                         # p = 0.5 each; fails with prob. < 1e-5
    assert all(torch.equal(plain[3][0], x) for _ in range(5))


def test_image_folder_of_non_square_images_is_cropped_square(tmp_path):
    for cls, (w, h) in {"a": (40, 20), "b": (20, 50)}.items():
        (tmp_path / cls).mkdir()
        Image.new("RGB", (w, h), (255, 0, 0)).save(tmp_path / cls / "img.png")
    train, test = get_dataset(Data(dataset="FOLDER", image_size=16, channels=3, root=str(tmp_path)), "unused")
    assert len(test) == 2                                                # no test/ folder: the training images
    for i in range(2):
        x = train[i][0]
        assert x.shape == (3, 16, 16)
        torch.testing.assert_close(x[:, 8, 8], torch.tensor([1.0, 0.0, 0.0]))


def test_shape_mismatch_is_a_clear_error_before_training(shared, tmp_path, capfd):
    with pytest.raises(ConfigError, match=r"MNIST gives training images of shape \(1, 28, 28\) but the config says "
                                          r"\(data.channels, data.image_size, data.image_size\) = \(3, 28, 28\)"):
        get_dataset(Data(**data_cfg(shared, "MNIST", channels=3)), "unused")
    with pytest.raises(ConfigError, match=r"FOLDER gives training images of shape \(3, 32, 32\)"):
        check_shape(get_dataset(Data(**data_cfg(shared, "FOLDER")), "unused")[0],
                    Data(**data_cfg(shared, "FOLDER", channels=1)))
    cfg = tmp_path / "bad.yml"
    cfg.write_text(yaml.safe_dump({"data": data_cfg(shared, "MNIST", channels=3), "model": {"ngf": 4},
                                   "training": {"num_workers": 0}}))
    rc, err = main_in_process(capfd, "--runner", "BaselineRunner", "--config", cfg, "--run", tmp_path / "run", "--doc", "bad")
    assert rc == 1 and err[-1].startswith("error: MNIST gives training images of shape (1, 28, 28)")
    assert not list((tmp_path / "run" / "logs" / "bad").glob("checkpoint*"))


def test_missing_data_offline_is_one_error_line_and_exit_1(tmp_path, capfd):
    cfg = tmp_path / "missing.yml"
    cfg.write_text(yaml.safe_dump({"data": {"dataset": "MNIST", "root": str(tmp_path / "nothing"), "download": False},
                                   "model": {"ngf": 4}, "training": {"num_workers": 0}}))
    for runner in ("AnnealRunner", "BaselineRunner", "ScoreNetRunner"):
        rc, err = main_in_process(capfd, "--runner", runner, "--config", cfg, "--run", tmp_path / "run", "--doc", runner)
        assert rc == 1
        assert not any("Traceback" in line for line in err)
        errors = [line for line in err if line.startswith("error:")]
        assert errors == [err[-1]]
        assert err[-1].startswith(f"error: MNIST data not available under {tmp_path / 'nothing'}")
        assert "MNIST/raw/train-images-idx3-ubyte" in err[-1] and "data.root" in err[-1]
    with pytest.raises(UserError, match="no img_align_celeba folder"):
        get_dataset(Data(dataset="CELEBA", image_size=32, channels=3, root=str(tmp_path), download=False), "x")


def test_digits_reject_random_flip_and_channel_mismatch():
    with pytest.raises(ConfigError, match="random_flip is not supported for DIGITS"):
        get_dataset(Data(dataset="DIGITS", image_size=8, random_flip=True), "unused")
    with pytest.raises(ConfigError, match=r"DIGITS gives training images of shape \(1, 8, 8\)"):
        get_dataset(Data(dataset="DIGITS", image_size=8, channels=3), "unused")


def test_dequantisation_bounds_and_the_raw_option():
    x = torch.tensor([0.0, 0.5, 1.0]).repeat(2000)
    d = Data(dataset="DIGITS", image_size=8)
    y = data_transform(x, d)
    lo = x * 255 / 256
    assert ((y >= lo) & (y < lo + 1 / 256)).all()                      # x*255/256 + U[0, 1)/256
    assert abs(float((y - lo).mean()) - 0.5 / 256) < 0.02 / 256          # the uniform's mean (6000 draws)
    assert torch.equal(data_transform(x, d, dequantize=False), x)       # ScoreNetRunner: raw data


# ---------------------------------------------------------------------------------------------------- runners


def tiny_config(shared, runner, dataset, n_iters=3, **training):
    cfg = {"training": dict(dict(batch_size=8, n_iters=n_iters, snapshot_freq=2, test_freq=2, num_workers=0),
                            **training),
           "data": data_cfg(shared, dataset),
           "model": {"ngf": 4, "num_classes": 3, "sigma_begin": 1.0, "sigma_end": 0.1, "nef": 8, "ndf": 8},
           "sampling": {"n_samples": 4, "n_steps_each": 2, "n_steps": 4, "gif_every": 2}}
    if runner == "ScoreNetRunner":
        cfg["training"].setdefault("algo", "ssm")
    return cfg


BUILD = {"AnnealRunner": AnnealRunner.build_model, "BaselineRunner": BaselineRunner.build_model,
         "ScoreNetRunner": ScoreNetRunner.build_model}


@pytest.mark.parametrize("dataset", ["MNIST", "FOLDER", "CELEBA"])
@pytest.mark.parametrize("runner", ["AnnealRunner", "BaselineRunner", "ScoreNetRunner"])
def test_runner_trains_and_tests_on_real_data(shared, tmp_path, capfd, runner, dataset):
    cfg_path = tmp_path / "tiny.yml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(shared, runner, dataset)))
    run, out = tmp_path / "run", tmp_path / "out"
    rc, err = main_in_process(capfd, "--runner", runner, "--config", cfg_path, "--run", run, "--doc", "d")
    assert rc == 0, err[-5:]
    log = run / "logs" / "d"
    assert sorted(p.name for p in log.glob("checkpoint*")) == ["checkpoint.pth", "checkpoint_2.pth",
                                                              "checkpoint_3.pth"]
    config = load_config(log / "config.yml")
    state = load_checkpoint(log / "checkpoint.pth")
    assert state["step"] == 3
    load_model_state(BUILD[runner](config), state, log / "checkpoint.pth")            # strict: keys and shapes
    values = logged_losses(log)
    test_name = {"ScoreNetRunner": "test_loss"}.get(runner, "test_dsm_loss")
    assert sorted(values) == [(1, "loss"), (2, "loss"), (2, test_name), (3, "loss")]
    assert all(math.isfinite(v) for v in values.values())
    if runner != "ScoreNetRunner":
        assert all(v > 0 for v in values.values())                      # DSM losses are squared norms

    if runner == "ScoreNetRunner" and dataset == "MNIST":
        return                          # its --test evaluates all 10000 test images: too slow for the suite
    rc, err = main_in_process(capfd, "--runner", runner, "--run", run, "--doc", "d", "--test", "-o", out)
    assert rc == 0, err[-5:]
    c, s = config.data.channels, config.data.image_size
    if runner == "ScoreNetRunner":
        result = json.loads((out / "test_loss.json").read_text())
        assert result["n_examples"] == {"FOLDER": 20, "CELEBA": 32}[dataset] and result["step"] == 3
        assert math.isfinite(result["test_loss"]) and (out / "figure1.png").is_file()
        return
    samples = torch.load(out / "samples.pth", weights_only=True)
    assert samples.shape == (4, c, s, s) and samples.min() >= 0 and samples.max() <= 1
    side = 2 * s + 3 * 2                                                # 2x2 grid, padding 2 (no upscaling at >= 28)
    assert Image.open(out / "samples.png").size == (side, side)
    gif = Image.open(out / "movie.gif")
    steps = 4 if runner == "BaselineRunner" else 3 * 2                 # Langevin steps / levels x steps per level
    assert gif.n_frames == 1 + steps // 2 and gif.size == (side, side)  # the start, then every gif_every-th step


@pytest.fixture(scope="module")
def two_scorenet_runs(tmp_path_factory):
    """Two ScoreNetRunner runs on the CIFAR-10 PNGs in one <run>: raw data (noise_std 0) and noise_std 0.01."""
    from conftest import SHARED
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (it exists only in the project's CI)")
    tmp = tmp_path_factory.mktemp("fig1")
    for doc, noise in (("noisy", 0.01), ("raw", 0.0)):
        path = tmp / f"{doc}.yml"
        path.write_text(yaml.safe_dump(tiny_config(SHARED, "ScoreNetRunner", "FOLDER", n_iters=4, noise_std=noise)))
        assert cli.main(["--runner", "ScoreNetRunner", "--config", str(path), "--run", str(tmp / "run"),
                         "--doc", doc]) == 0
    return tmp


def test_scorenet_loss_log_matches_the_log_and_figure1_has_a_panel_per_run(two_scorenet_runs, capfd):
    run = two_scorenet_runs / "run"
    for doc in ("noisy", "raw"):
        log = read_loss_log(run / "logs" / doc / "losses.csv")
        assert log["loss"][0] == [1, 2, 3, 4] and log["test_loss"][0] == [2, 4]
        for (step, name), value in logged_losses(run / "logs" / doc).items():
            i = log[name][0].index(step)
            assert log[name][1][i] == pytest.approx(value, rel=1e-5, abs=1e-9)
    assert load_config(run / "logs" / "raw" / "config.yml").training.noise_std == 0

    out = two_scorenet_runs / "out"
    rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--run", run, "--doc", "raw", "--test", "-o", out)
    assert rc == 0, err[-5:]
    assert any("runs: raw, noisy" in line for line in err)             # ordered by noise_std: raw data first
    two = Image.open(out / "figure1.png").size
    result = json.loads((out / "test_loss.json").read_text())
    assert result["noise_std"] == 0 and result["n_examples"] == 20 and result["algo"] == "ssm"
    rc, _ = main_in_process(capfd, "--runner", "ScoreNetRunner", "--run", run, "--doc", "raw", "--test", "-o", out)
    assert rc == 1                                                      # never overwrite without --overwrite
    (run / "logs" / "noisy" / "losses.csv").rename(run / "logs" / "noisy" / "hidden.csv")
    broken = run / "logs" / "broken"                                    # another run's bad log is left out
    broken.mkdir()
    (broken / "config.yml").write_text((run / "logs" / "raw" / "config.yml").read_text())
    (broken / "losses.csv").write_text("step,tag,value\n1,loss,oops\n")
    try:
        rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--run", run, "--doc", "raw", "--test", "-o", out,
                          "--overwrite")
    finally:
        (run / "logs" / "noisy" / "hidden.csv").rename(run / "logs" / "noisy" / "losses.csv")
        shutil.rmtree(broken)
    assert rc == 0 and any("left out of the figure" in line and "1,loss,oops" in line for line in err)
    one = Image.open(out / "figure1.png").size
    assert one[1] == two[1] and two[0] == pytest.approx(2 * one[0], rel=0.02)


def test_scorenet_resume_keeps_one_loss_row_per_step(two_scorenet_runs, capfd, tmp_path):
    from conftest import SHARED
    run = tmp_path / "run"
    shutil.copytree(two_scorenet_runs / "run" / "logs" / "noisy", run / "logs" / "noisy")
    log_dir = run / "logs" / "noisy"
    shutil.copy(log_dir / "checkpoint_2.pth", log_dir / "checkpoint.pth")      # resume from step 2 of 4 logged
    longer = tmp_path / "longer.yml"
    longer.write_text(yaml.safe_dump(tiny_config(SHARED, "ScoreNetRunner", "FOLDER", n_iters=6, noise_std=0.01)))
    rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--config", longer, "--run", run, "--doc", "noisy",
                      "--resume_training")
    assert rc == 0, err[-5:]
    log = read_loss_log(run / "logs" / "noisy" / "losses.csv")
    assert log["loss"][0] == [1, 2, 3, 4, 5, 6] and log["test_loss"][0] == [2, 4, 6]
    before = read_loss_log(two_scorenet_runs / "run" / "logs" / "noisy" / "losses.csv")
    assert log["loss"][1][:2] == before["loss"][1][:2]


def test_scorenet_config_errors_are_one_line(tmp_path, capfd):
    bad = {"dsm needs training.noise_std > 0": {"training": {"algo": "dsm", "noise_std": 0.0}},
           "data.image_size must be a multiple of 4": {"data": {"image_size": 10}},
           "model.nef must equal ndf": {"model": {"nef": 8, "ndf": 16}}}
    for i, (message, change) in enumerate(bad.items()):
        cfg = {"training": {"num_workers": 0, "n_iters": 1}, "data": {"dataset": "DIGITS", "image_size": 8},
               "model": {"nef": 8, "ndf": 8}}
        for section, values in change.items():
            cfg[section].update(values)
        path = tmp_path / f"bad{i}.yml"
        path.write_text(yaml.safe_dump(cfg))
        rc, err = main_in_process(capfd, "--runner", "ScoreNetRunner", "--config", path, "--run", tmp_path / "run",
                          "--doc", str(i))
        assert rc == 1 and message in err[-1] and err[-1].startswith("error:")
