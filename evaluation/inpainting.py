"""Inpainting errors: how close completions are to the images they complete, on the pixels the mask hides."""
import math

import torch


def _psnr(mse):
    """PSNR in dB of images in [0, 1]: 10 log10(1 / MSE); None (JSON null) where the MSE is 0 or undefined."""
    return None if mse is None or mse <= 0 else 10 * math.log10(1 / mse)


def inpainting_errors(completions, refs, mask):
    """MSE and PSNR of ``completions`` (k, m, C, H, W) of ``refs`` (k, C, H, W) on the pixels that ``mask`` (C, H, W,
    1 = observed) hides; images in [0, 1].  Per reference (over its m completions, and for each completion) and
    overall (over every hidden value of every completion; PSNR from that MSE).  MSEs are None when nothing is hidden.
    """
    hidden = (1 - mask).to(torch.float64)
    n_hidden = float(hidden.sum())
    sq = (completions.to(torch.float64) - refs.to(torch.float64).unsqueeze(1)) ** 2 * hidden     # (k, m, C, H, W)
    per_completion = sq.flatten(2).sum(2) / n_hidden if n_hidden else None                     # (k, m)
    rows = []
    for i in range(completions.shape[0]):
        mse = float(per_completion[i].mean()) if n_hidden else None
        each = [float(v) for v in per_completion[i]] if n_hidden else []
        rows.append({"reference": i, "mse": mse, "psnr": _psnr(mse), "mse_per_completion": each,
                     "psnr_per_completion": [_psnr(v) for v in each]})
    mse = float(per_completion.mean()) if n_hidden else None
    return {"hidden_values": int(n_hidden), "observed_values": int(mask.numel() - n_hidden),
            "mse": mse, "psnr": _psnr(mse), "per_reference": rows}
