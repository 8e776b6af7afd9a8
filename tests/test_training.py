"""training/: the wrapper-aware unwrap keeps official checkpoint keys; the step functions the benchmark shares."""
import torch
from conftest import tiny_digits_config

from compute.precision import unwrap
from configs import config_from_dict
from models import CondRefineNetDilated
from training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from training.loop import forward_loss, update
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


class FullDiskWriter:
    """A tensorboard writer whose disk is full: scalars are accepted, closing (flushing) fails."""

    def __init__(self):
        self.closed = 0

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        self.closed += 1
        raise OSError(28, "No space left on device")


def _tiny_setup(tmp_path, writer):
    from datasets import BatchStream
    from training.setup import TrainSetup
    tmp_path.mkdir()
    cfg = config_from_dict(tiny_digits_config(training={"n_iters": 2, "snapshot_freq": 2}))
    model = torch.nn.Linear(1, 1)
    data = torch.utils.data.TensorDataset(torch.ones(8, 1), torch.zeros(8))
    return TrainSetup(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      train_stream=BatchStream(data, 4, seed=0), test_stream=None, config=cfg, log_dir=tmp_path,
                      writer=writer, device=torch.device("cpu"))


def test_a_full_disk_at_the_end_is_one_error_and_never_hides_the_error_that_stopped_training(tmp_path, monkeypatch,
                                                                                             caplog):
    import pytest

    import training.loop
    from errors import UserError
    from training.loop import Objective, train_loop
    objective = Objective(loss_fn=lambda m, x: (m(x).squeeze(1) ** 2, None))
    writer = FullDiskWriter()
    with pytest.raises(UserError, match=r"^could not write the tensorboard log: No space left on device$"):
        train_loop(_tiny_setup(tmp_path / "a", writer), objective)
    assert writer.closed == 1

    def disk_full(paths, **kwargs):
        raise UserError(f"cannot write checkpoint {paths[-1]}: No space left on device")
    monkeypatch.setattr(training.loop, "save_checkpoint", disk_full)
    writer = FullDiskWriter()
    with pytest.raises(UserError, match=r"^cannot write checkpoint .*checkpoint.pth: No space left on device$"):
        train_loop(_tiny_setup(tmp_path / "b", writer), objective)
    assert writer.closed == 1
    assert "could not write the tensorboard log: No space left on device" in caplog.text
