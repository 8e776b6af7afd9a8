"""Loading samples to evaluate: an ``.npz`` of uint8 images or a folder of image files, checked on the way in.

``.npz``: the array under key ``samples`` (score_sde's convention), else the file's first array (improved-diffusion
writes ``arr_0``), uint8 (N, H, W, C) with C in {1, 3}, or (N, H, W) grayscale.  Folder: every ``.png`` (and
``.jpg``/``.jpeg``) below it, in sorted path order, converted to RGB; all must have one size.  Whatever is wrong
(missing path, other dtype or shape, N = 0, mixed sizes, an unreadable image) is one ``UserError``.
"""
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_images(x, source):
    """Check a loaded array is uint8 (N, H, W, C), C in {1, 3}, or (N, H, W), N > 0; return it as (N, H, W, C)."""
    if x.dtype != np.uint8:
        raise UserError(f"{source}: samples must be uint8 images in [0, 255], got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{source}: samples must be (N, H, W, C) with C = 1 or 3 (channels last), or (N, H, W); "
                        f"got shape {x.shape}")
    if x.shape[0] == 0:
        raise UserError(f"{source}: no samples (N = 0)")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise UserError(f"{source}: samples have an empty spatial size, shape {x.shape}")
    return x


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if not keys:
                raise UserError(f"{path}: the .npz holds no array")
            key = "samples" if "samples" in keys else keys[0]
            x = z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from e
    return check_images(x, f"{path} [{key}]")


def _load_folder(path):
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder (N = 0)")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"{f}: not a readable image ({e})") from e
        if images[-1].shape != images[0].shape:
            raise UserError(f"{path}: images of different sizes ({files[0].name} is {images[0].shape[:2]}, "
                            f"{f.name} is {images[-1].shape[:2]})")
    return check_images(np.stack(images), str(path))


def load_images(path):
    """uint8 images (N, H, W, C) from an ``.npz`` file or a folder of images (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    raise UserError(f"{path}: samples must be an .npz file or a folder of images")
