"""Pictures while training (training.preview_*): a small sample grid every n steps, in the run folder and
tensorboard, drawn on its own random numbers, so that the run trains exactly as without previews."""
import torch
from conftest import main_in_process, tiny_digits_config, write_yaml

from training.checkpoint import load_checkpoint


def test_previews_are_written_and_change_nothing_in_training(tmp_path, capfd):
    runs = {}
    for name, freq in (("plain", 0), ("previews", 2)):
        cfg = write_yaml(tmp_path / f"{name}.yml", tiny_digits_config(
            model={"ngf": 4}, training={"preview_freq": freq, "preview_samples": 4, "preview_steps_each": 2}))
        rc, err = main_in_process(capfd, "--config", cfg, "--doc", name, "--run", tmp_path / "run")
        assert rc == 0, err
        runs[name] = tmp_path / "run" / "logs" / name
    assert sorted(p.name for p in (runs["previews"] / "previews").iterdir()) == ["step_2.png", "step_4.png",
                                                                                 "step_6.png"]
    assert not (runs["plain"] / "previews").exists()
    a, b = (load_checkpoint(runs[n] / "checkpoint.pth") for n in ("plain", "previews"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])       # the same training, bit for bit
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    events = list((tmp_path / "run" / "tensorboard" / "previews").glob("events.*"))
    assert events and max(e.stat().st_size for e in events) > \
        max(e.stat().st_size for e in (tmp_path / "run" / "tensorboard" / "plain").glob("events.*"))   # the images
