"""Small networks for the full-integer tests (store/integer.py, the integer C, the device, .tflite):
MLPs and 1-D/2-D CNNs with odd sizes, ReLU/ReLU6/none, max and average pooling, padding, stride, dilation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Case:
    name: str
    make: object
    shape: tuple

    def build(self, seed: int = 0) -> nn.Sequential:
        torch.manual_seed(seed)
        return self.make()


CASES = [
    Case("mlp-relu", lambda: nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5), nn.ReLU(), nn.Linear(5, 3)),
         (7,)),
    Case("mlp-relu6-nobias", lambda: nn.Sequential(nn.Linear(6, 11, bias=False), nn.ReLU6(), nn.Linear(11, 4)), (6,)),
    Case("mlp-linear-out-relu", lambda: nn.Sequential(nn.Linear(5, 13), nn.Linear(13, 2), nn.ReLU()), (5,)),
    Case("mlp-sigmoid-tanh", lambda: nn.Sequential(nn.Linear(9, 11), nn.Sigmoid(), nn.Linear(11, 6), nn.Tanh(),
                                                   nn.Linear(6, 4), nn.Sigmoid()), (9,)),
    Case("cnn2d-max-avg", lambda: nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 3, 3, stride=2), nn.AvgPool2d(2),
        nn.ReLU(), nn.Flatten(), nn.Linear(3, 4)), (2, 11, 11)),
    Case("cnn2d-pad-maxpool-dil", lambda: nn.Sequential(
        nn.Conv2d(1, 4, (3, 2), padding=(1, 0), dilation=(2, 1)), nn.MaxPool2d(3, 2, padding=1), nn.ReLU6(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3)), (1, 9, 9)),
    Case("cnn2d-pool-tanh", lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)), (1, 8, 8)),
    Case("cnn1d", lambda: nn.Sequential(
        nn.Conv1d(3, 6, 5, stride=2, padding=2), nn.ReLU(), nn.AvgPool1d(3), nn.Conv1d(6, 4, 3), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 5)), (3, 31)),
]


def calibration(case: Case, n: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *case.shape, generator=g) * 1.5 + 0.3




def named(name: str) -> Case:
    return next(c for c in CASES if c.name == name)
