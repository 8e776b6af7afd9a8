"""Inputs of the device check's CLI pass (benchmarks/gpu_check.sh): a small TorchScript stand-in for the FID Inception
network (the 87 MB one does not travel to a device machine; it has the same calling convention: [0, 255] pixels in,
2048 features or 1008 logits out), and the configs of a short digits run, its continuation and the sampler overlays.

    python benchmarks/gpu_check_setup.py WORK      # writes WORK/standin.pt, WORK/train.yml, WORK/more.yml, WORK/s_*.yml
"""
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

SAMPLERS = {    # overlay name: sampling section of a --test
    "langevin": {"method": "langevin"},
    "pc": {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin", "n_steps_each": 1},
    "ode": {"method": "ode"},
    "heun": {"method": "heun", "nfe": 35, "denoise": True},
    "euler_ancestral": {"method": "euler_ancestral", "nfe": 50, "denoise": True},
    "inpaint": {"method": "langevin", "inpainting": True, "inpainting_mask": "centre_box"},
}


class StandInInception(torch.nn.Module):
    """The FID Inception's calling convention at a few hundred FLOPs per image (not its features)."""

    def __init__(self):
        super().__init__()
        self.feat = torch.nn.Linear(3 * 4 * 4, 2048)
        self.head = torch.nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = torch.tanh(self.feat(torch.nn.functional.adaptive_avg_pool2d(img / 255, 4).flatten(1)))
        return f if return_features else self.head(f)


def main(work):
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(StandInInception()), str(work / "standin.pt"))
    cfg = yaml.safe_load((REPO / "configs" / "digits.yml").read_text())
    cfg["training"].update(n_iters=200, snapshot_freq=100, log_freq=50)
    cfg["eval"].update(n_samples=500, batch_size=250, inception_weights=str(work / "standin.pt"))
    (work / "train.yml").write_text(yaml.safe_dump(cfg))
    cfg["training"]["n_iters"] = 300
    (work / "more.yml").write_text(yaml.safe_dump(cfg))
    for name, sampling in SAMPLERS.items():
        (work / f"s_{name}.yml").write_text(yaml.safe_dump({"sampling": sampling}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/gpu_check_setup.py WORK_FOLDER")
    main(sys.argv[1])
