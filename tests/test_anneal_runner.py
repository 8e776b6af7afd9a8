"""AnnealRunner end to end on the real digits: training artefacts, sampling outputs, inpainting."""
import torch
import yaml
from conftest import tiny_digits_config
from PIL import Image

import main as cli
from configs import config_from_dict
from datasets import get_dataset


def train_and_sample(tmp_path, write_config, doc, **overrides):
    cfg = tiny_digits_config(**overrides)
    path = write_config(cfg, f"{doc}.yml")
    run = tmp_path / "run"
    assert cli.main(["--config", str(path), "--run", str(run), "--doc", doc]) == 0
    out = tmp_path / f"out_{doc}"
    assert cli.main(["--test", "--run", str(run), "--doc", doc, "-o", str(out)]) == 0
    return cfg, run, out


def test_train_writes_checkpoints_config_and_logs(tmp_path, write_config):
    cfg, run, out = train_and_sample(tmp_path, write_config, "plain")
    log = run / "logs" / "plain"
    assert sorted(p.name for p in log.glob("checkpoint*.pth")) == ["checkpoint.pth", "checkpoint_3.pth",
                                                                    "checkpoint_6.pth"]
    saved = yaml.safe_load((log / "config.yml").read_text())
    assert config_from_dict(saved) == config_from_dict(cfg)          # plain YAML, every default written out
    lines = (log / "stdout.txt").read_text()
    assert "step: 6, loss:" in lines and "step: 6, test_dsm_loss:" in lines
    assert list((run / "tensorboard" / "plain").glob("events.out.tfevents.*"))

    samples = torch.load(out / "samples.pth", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    gif = Image.open(out / "movie.gif")
    total = 4 * 3                                                      # num_classes x n_steps_each
    assert gif.n_frames == 1 + total // 2                              # the start, then every gif_every-th step
    assert Image.open(out / "samples.png").size[0] > 2 * 8             # 2x2 grid, small images enlarged


def test_inpainting_completes_test_images(tmp_path, write_config):
    cfg, run, out = train_and_sample(tmp_path, write_config, "inpaint", sampling={"inpainting": True})
    samples = torch.load(out / "inpainting.pth", weights_only=True)    # (k*k, C, H, W), k = round(sqrt(4)) = 2
    assert samples.shape == (4, 1, 8, 8)
    _, test = get_dataset(config_from_dict(cfg).data, str(run))
    refs = torch.stack([test[i][0] for i in range(2)]).repeat_interleave(2, dim=0)
    observed = (samples[..., :4] - refs[..., :4]).abs()
    # the observed left half is the reference plus sigma_L = 0.05 noise; the right half is sampled
    assert observed.mean() < 0.06
    assert (samples[..., 4:] - refs[..., 4:]).abs().mean() > observed.mean()
    assert (out / "inpainting.png").is_file() and (out / "movie.gif").is_file()
    assert not (out / "samples.pth").exists()
