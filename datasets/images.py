"""Image data sets: ``get_dataset(data_cfg, default_root)`` returns ``(train, test)`` datasets of ``(image, label)``
pairs with images (C, H, W) in [0, 1].  Every torchvision data set is read from one root folder (``data.root``;
default ``<run>/datasets``) in torchvision's own layout, and downloaded there when missing and ``data.download`` is
true.  A missing data set is one clear error saying where to put it.
"""
import logging
import os
from pathlib import Path

import torch
import torchvision.transforms as T
from torch.utils.data import Dataset, TensorDataset

from errors import ConfigError, UserError, is_allocation_error

_LAYOUT_HINT = {
    "MNIST": "{root}/MNIST/raw/train-images-idx3-ubyte (and the other three raw files)",
    "FashionMNIST": "{root}/FashionMNIST/raw/train-images-idx3-ubyte (and the other three raw files)",
    "CIFAR10": "{root}/cifar-10-batches-py/data_batch_1 ... test_batch",
    "SVHN": "{root}/train_32x32.mat and {root}/test_32x32.mat",
    "CELEBA": "{root}/celeba/img_align_celeba/*.jpg or {root}/img_align_celeba/*.jpg (official file names 000001.jpg "
              "... give the official train/test split)",
    "FOLDER": "{root}/train/<class>/*.png and optionally {root}/test/<class>/*.png (or {root}/<class>/*.png)",
}


def _transforms(data_cfg, train, center_crop=None):
    """PIL image -> (C, H, W) in [0, 1]: [CenterCrop(center_crop)] -> Resize -> [flip] -> [Grayscale] -> ToTensor.

    Resize(int) scales the shorter side; for image folders a CenterCrop(image_size) follows so that non-square images
    come out square (a no-op for square ones).  MNIST, CIFAR-10, SVHN and CelebA (after its crop) are square already.
    """
    steps = [T.CenterCrop(center_crop)] if center_crop else []
    steps.append(T.Resize(data_cfg.image_size))
    if data_cfg.dataset == "FOLDER":
        steps.append(T.CenterCrop(data_cfg.image_size))
    if train and data_cfg.random_flip:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    if data_cfg.dataset in ("CELEBA", "FOLDER") and data_cfg.channels == 1:
        steps.append(T.Grayscale(1))
    steps.append(T.ToTensor())
    return T.Compose(steps)


class ImageFiles(Dataset):
    """Images from a list of files, label 0.  Used for CelebA folders without torchvision's annotation files."""

    def __init__(self, files, transform):
        self.files, self.transform = list(files), transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), 0


# official CelebA partition by file number: train 1..162770, valid 162771..182637, test 182638..202599
_CELEBA_TEST_START = 182638
_CELEBA_VALID_START = 162771


def _celeba_folder(root):
    return next((p for p in (Path(root) / "celeba" / "img_align_celeba", Path(root) / "img_align_celeba")
                 if p.is_dir()), None)


def _celeba(data_cfg, root, download):
    """CelebA from its aligned JPEGs, split by file number as the official list_eval_partition.txt does.

    A local ``img_align_celeba`` folder is used as it is (torchvision's class would insist on all five annotation
    files); only when it is missing and ``download`` is true does torchvision fetch the data set (needs ``gdown``).
    Transforms as official: CenterCrop(140) -> Resize(image_size) -> [random flip] -> ToTensor.
    """
    folder = _celeba_folder(root)
    if folder is None and download:
        import torchvision.datasets as tvd
        tvd.CelebA(root, split="all", target_type=[], download=True)     # unpacks into {root}/celeba/img_align_celeba
        folder = _celeba_folder(root)
    if folder is None:
        raise FileNotFoundError(f"no img_align_celeba folder under {root}")
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no .jpg files in {folder}")
    train_tf, test_tf = (_transforms(data_cfg, t, center_crop=140) for t in (True, False))
    train = [f for f in files if not f.stem.isdigit() or int(f.stem) < _CELEBA_VALID_START]
    test = [f for f in files if f.stem.isdigit() and int(f.stem) >= _CELEBA_TEST_START]
    if not test:
        logging.warning("CelebA at %s has no image of the official test split; test losses use training images",
                        folder)
        test = train
    return ImageFiles(train, train_tf), ImageFiles(test, test_tf)


def _folder(data_cfg, root):
    import torchvision.datasets as tvd
    root = Path(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = root / "test" if (root / "test").is_dir() else None
    if test_dir is None:
        logging.warning("%s has no test/ folder; test losses use the training images", root)
        test_dir = train_dir
    return (tvd.ImageFolder(str(train_dir), transform=_transforms(data_cfg, True)),
            tvd.ImageFolder(str(test_dir), transform=_transforms(data_cfg, False)))


def _digits(data_cfg):
    """scikit-learn's UCI handwritten digits: 1797 real 8x8 images with 17 grey levels, shipped in its wheel.

    A fixed split (seed 2019): 180 test images, 1617 training images.  Values are scaled to [0, 1] by /16.
    """
    if data_cfg.random_flip:
        raise ConfigError("data.random_flip is not supported for DIGITS (the digits are an in-memory tensor); "
                          "set it to false")
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0     # (1797, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    if data_cfg.image_size != 8:
        x = T.functional.resize(x, [data_cfg.image_size] * 2, antialias=True).clamp(0, 1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(2019))
    test_idx, train_idx = perm[:180], perm[180:]
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])


def _torchvision(data_cfg, root, download):
    import torchvision.datasets as tvd
    name = data_cfg.dataset
    train_tf, test_tf = _transforms(data_cfg, True), _transforms(data_cfg, False)
    if name in ("MNIST", "FashionMNIST", "CIFAR10"):
        cls = getattr(tvd, name)
        return (cls(root, train=True, transform=train_tf, download=download),
                cls(root, train=False, transform=test_tf, download=download))
    if name == "SVHN":
        return (tvd.SVHN(root, split="train", transform=train_tf, download=download),
                tvd.SVHN(root, split="test", transform=test_tf, download=download))
    raise ConfigError(f"unknown data set {name}")


def data_root(data_cfg, run):
    """The folder holding the data sets (and their cached statistics): ``data.root``, else ``<run>/datasets``."""
    return Path(os.path.expanduser(data_cfg.root or os.path.join(run, "datasets")))


def get_dataset(data_cfg, default_root):
    """Return ``(train, test)`` for ``data_cfg`` (a configs.schema.Data); raise UserError when data is missing.

    Images are checked against ``data.channels`` and ``data.image_size`` before any training starts.
    """
    name = data_cfg.dataset
    root = str(data_root(data_cfg, default_root))
    try:
        if name == "DIGITS":
            train, test = _digits(data_cfg)
        elif name == "CELEBA":
            train, test = _celeba(data_cfg, root, data_cfg.download)
        elif name == "FOLDER":
            train, test = _folder(data_cfg, root)
        else:
            train, test = _torchvision(data_cfg, root, data_cfg.download)
    except UserError:
        raise
    except MemoryError as e:
        raise UserError(f"not enough memory to load {name} at data.image_size {data_cfg.image_size}") from e
    except (RuntimeError, OSError, ValueError) as e:
        if is_allocation_error(e):
            raise UserError(f"not enough memory to load {name} at data.image_size {data_cfg.image_size} "
                            f"({str(e).strip().splitlines()[0][:120]})") from e
        hint = _LAYOUT_HINT.get(name, "").format(root=root)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{name} data not available under {root} ({reason}); put it there as {hint}, "
                        f"or point data.root at a folder that has it") from e
    check_shape(train, data_cfg)
    check_shape(test, data_cfg, split="test")
    return train, test


def check_shape(dataset, data_cfg, split="training"):
    """Raise a one-line error unless the first image of ``dataset`` is (data.channels, data.image_size, image_size)."""
    if len(dataset) == 0:
        raise UserError(f"{data_cfg.dataset}: the {split} set is empty")
    x = dataset[0][0]
    expected = (data_cfg.channels, data_cfg.image_size, data_cfg.image_size)
    if tuple(x.shape) != expected:
        raise ConfigError(f"{data_cfg.dataset} gives {split} images of shape {tuple(x.shape)} but the config says "
                          f"(data.channels, data.image_size, data.image_size) = {expected}")
