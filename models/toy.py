"""The score networks of the 2-D toy experiments (paper Figures 2 and 3): small MLPs on (B, 2) inputs."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ToyScore(nn.Module):
    """The official toy score model s(x): Linear(2,h)-Softplus-Linear(h,h)-Softplus-Linear(h,2)."""

    def __init__(self, hidden=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


class ToyNCSN(nn.Module):
    """Noise-conditional MLP s(x, i) = f(x / sqrt(1 + sigma_i^2), i) / sigma_i.

    The level enters through learned per-level biases of both hidden layers; input scaling and the 1/sigma output keep
    f of order one at every level (the score of the perturbed data has size ~ 1/sigma).  ``sigmas`` is a buffer that
    is not saved (it is in the checkpoint's ``sigmas``), so the state dict holds only weights.
    """

    def __init__(self, sigmas, hidden=128):
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32), persistent=False)
        self.fc1, self.fc2, self.fc3 = nn.Linear(2, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)
        self.embed1, self.embed2 = nn.Embedding(len(sigmas), hidden), nn.Embedding(len(sigmas), hidden)
        nn.init.zeros_(self.embed1.weight)
        nn.init.zeros_(self.embed2.weight)

    def forward(self, x, labels):
        sigma = self.sigmas[labels][:, None]                                  # (B, 1)
        h = F.softplus(self.fc1(x / (1 + sigma ** 2).sqrt()) + self.embed1(labels))
        h = F.softplus(self.fc2(h) + self.embed2(labels))
        return self.fc3(h) / sigma
