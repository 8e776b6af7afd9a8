"""Random state: seeding every generator, and saving / restoring their states for exact resume."""
import random

import numpy as np
import torch

from errors import describe

_NUMPY_SEEDS = 2 ** 32                  # np.random.seed takes 0 <= seed < 2**32
_TORCH_SEEDS = (-2 ** 63, 2 ** 64)      # torch.manual_seed takes [-2**63, 2**64)


def seed_everything(seed):
    """Seed Python, NumPy and torch (and CUDA) from any int.

    Seeds derived from steps (``seed + rank + 1_000_003 * step``) outgrow NumPy's range: NumPy gets ``seed mod 2**32``
    (torch ``seed mod 2**64`` outside its own range); seeds within range are used unchanged, as always.
    """
    seed = int(seed)
    torch_seed = seed if _TORCH_SEEDS[0] <= seed < _TORCH_SEEDS[1] else seed % 2 ** 64
    random.seed(seed)
    np.random.seed(seed % _NUMPY_SEEDS)
    torch.manual_seed(torch_seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(torch_seed)


def rng_state():
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain data (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def on_cpu(state):
    """A saved :func:`rng_state` with every tensor on the CPU, where generator states live (a checkpoint loaded with
    ``map_location`` onto a GPU carries them there); anything that is not a dict is returned as it is."""
    if not isinstance(state, dict):
        return state

    def cpu(v):
        if isinstance(v, torch.Tensor):
            return v.cpu()
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(cpu(x) for x in v)
        return v
    return {k: cpu(v) for k, v in state.items()}


def check_rng_state(state):
    """The first problem of a saved :func:`rng_state` as ``(field, what is wrong)``, or None if it can be restored.

    Every part is tried on a scratch generator, so that nothing global changes here.  Tensors on another device than
    the CPU are checked as their CPU copies (:func:`on_cpu`).
    """
    if not isinstance(state, dict):
        return "rng", f"is a {type(state).__name__}, not a dict"
    state = on_cpu(state)
    missing = [k for k in ("python", "torch", "numpy") if k not in state]
    if missing:
        return f"rng.{missing[0]}", "is missing"
    py = state["python"]
    if not (isinstance(py, (tuple, list)) and len(py) == 3 and _is_int(py[0]) and isinstance(py[1], (tuple, list))
            and all(_is_int(v) for v in py[1]) and (py[2] is None or isinstance(py[2], float))):
        return "rng.python", "is not a Python random state (version, 625 ints, gauss)"
    try:
        random.Random().setstate(_as_tuple(py))
    except (TypeError, ValueError, OverflowError) as e:
        return "rng.python", f"is not a valid Python random state ({e})"
    problem = _check_byte_state(state["torch"], torch.get_rng_state().numel())
    if problem:
        return "rng.torch", problem
    try:
        torch.Generator().set_state(state["torch"])
    except (RuntimeError, TypeError) as e:
        return "rng.torch", f"is not a valid torch generator state ({' '.join(str(e).split())[:120]})"
    n = state["numpy"]
    if not isinstance(n, dict):
        return "rng.numpy", f"is a {type(n).__name__}, not a dict"
    for key in ("keys", "pos", "has_gauss", "cached_gaussian"):
        if key not in n:
            return f"rng.numpy.{key}", "is missing"
    keys = n["keys"]
    if not (isinstance(keys, torch.Tensor) and keys.dtype == torch.int64 and tuple(keys.shape) == (624,)):
        return "rng.numpy.keys", f"is not an int64 tensor of shape (624,) ({describe(keys)})"
    if bool(((keys < 0) | (keys >= 2 ** 32)).any()):
        return "rng.numpy.keys", "holds values outside 0..2**32-1"
    if not (_is_int(n["pos"]) and 0 <= n["pos"] <= 624):
        return "rng.numpy.pos", f"must be an int in 0..624, not {describe(n['pos'])}"
    if not (_is_int(n["has_gauss"]) and n["has_gauss"] in (0, 1)):
        return "rng.numpy.has_gauss", f"must be 0 or 1, not {describe(n['has_gauss'])}"
    if not (isinstance(n["cached_gaussian"], (int, float)) and not isinstance(n["cached_gaussian"], bool)):
        return "rng.numpy.cached_gaussian", f"must be a float, not {describe(n['cached_gaussian'])}"
    try:
        np.random.RandomState().set_state(("MT19937", keys.numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                                           float(n["cached_gaussian"])))
    except (TypeError, ValueError) as e:
        return "rng.numpy", f"is not a valid NumPy random state ({e})"
    if "cuda" in state:
        cuda = state["cuda"]
        if not isinstance(cuda, (list, tuple)):
            return "rng.cuda", f"is a {type(cuda).__name__}, not a list of generator states"
        size = torch.cuda.get_rng_state(0).numel() if torch.cuda.is_available() else None
        for i, s in enumerate(cuda):
            problem = _check_byte_state(s, size)
            if problem:
                return f"rng.cuda[{i}]", problem
    return None


def set_rng_state(state):
    """Restore a :func:`rng_state` (check it first with :func:`check_rng_state`).  CUDA states are restored for the
    devices present (a checkpoint of a machine with more GPUs keeps the extra states unused).  States loaded onto a
    GPU are restored from their CPU copies."""
    state = on_cpu(state)
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])


def _check_byte_state(t, size):
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        return f"is not a 1-D uint8 tensor ({describe(t)})"
    if size is not None and t.numel() != size:
        return f"has {t.numel()} bytes, not {size}"
    return None


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)



def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
