"""The training-time data transform (uniform dequantisation, optional logit) and its inverse: pure tensor functions."""
import torch


def logit_transform(image, lam=1e-6):
    y = lam + (1 - 2 * lam) * image
    return torch.log(y) - torch.log1p(-y)


def data_transform(x, data_cfg, dequantize=True):
    """Training-time transform: uniform dequantisation x*255/256 + U[0,1)/256, then the optional logit.

    ``dequantize=False`` skips the dequantisation (ScoreNetRunner, as official: Figure 1 is about raw data).
    """
    if dequantize:
        x = x / 256. * 255. + torch.rand_like(x) / 256.
    if data_cfg.logit_transform:
        x = logit_transform(x)
    return x


def inverse_data_transform(x, data_cfg):
    """Model space -> images in [0, 1] (sigmoid when the logit transform is on, then clamp)."""
    if data_cfg.logit_transform:
        x = torch.sigmoid(x)
    return x.clamp(0.0, 1.0)
