"""training/: the wrapper-aware unwrap keeps official checkpoint keys; the step functions the benchmark shares."""
import torch

from configs import config_from_dict
from conftest import tiny_digits_config
from models import CondRefineNetDilated
from training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from training.loop import forward_loss, update
from training.precision import unwrap
from training.setup import make_optimizer


def test_unwrap_strips_compile_and_data_parallel_so_checkpoints_keep_the_official_keys(tmp_path):
    net = CondRefineNetDilated(channels=1, image_size=8, ngf=4, num_classes=3)
    official_keys = list(net.state_dict())
    compiled = torch.compile(net)                       # lazy: nothing is compiled until it is called
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())      # what a naive save would write
    wrapped = torch.nn.DataParallel(compiled)           # on CPU a plain wrapper with .module
    assert unwrap(compiled) is net and unwrap(wrapped) is net and unwrap(net) is net
    cfg = config_from_dict(tiny_digits_config())
    save_checkpoint([tmp_path / "c.pth"], model=wrapped, optimizer=make_optimizer(net.parameters(), cfg.optim),
                    step=1, sigmas=None, config=cfg)
    raw = torch.load(tmp_path / "c.pth", weights_only=True)
    assert list(raw["model"]) == official_keys
    # a file that does carry the prefixes (written by other code) still loads into the bare network
    prefixed = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    torch.save({"model": prefixed, "optimizer": None}, tmp_path / "p.pth")
    other = CondRefineNetDilated(channels=1, image_size=8, ngf=4, num_classes=3)
    load_model_state(other, load_checkpoint(tmp_path / "p.pth"), tmp_path / "p.pth")
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_forward_loss_and_update_take_one_optimizer_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    loss, per_example, labels = forward_loss(model, lambda m, X: ((m(X).squeeze(1) - 1) ** 2, None), x)
    assert per_example.shape == (8,) and labels is None and loss.item() == per_example.mean().item()
    w = model.weight.detach().clone()
    grad = torch.autograd.grad(((model(x).squeeze(1) - 1) ** 2).mean(), model.weight)[0]
    update(opt, loss)
    torch.testing.assert_close(model.weight.detach(), w - 0.1 * grad)
