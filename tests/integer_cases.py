"""Small networks for the full-integer tests (store/integer.py, the integer C, the device, .tflite):
MLPs and 1-D/2-D CNNs with odd sizes, ReLU/ReLU6/none, max and average pooling, padding, stride, dilation;
``DS_CASES``: depthwise-separable CNNs (depthwise conv, channel multiplier 1; global average pooling)."""

from __future__ import annotations

import copy
import functools
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


def _ds_manual() -> nn.Sequential:
    """2-D: a depthwise conv with stride 2 and dilation 2 (padding 2), ReLU6 after it, no bias on the
    pointwise conv, max pooling after the second depthwise one, global average pooling."""
    return nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 5, 3, stride=2, padding=2, dilation=2, groups=5), nn.ReLU6(),
        nn.Conv2d(5, 7, 1, bias=False), nn.ReLU(), nn.Conv2d(7, 7, 3, groups=7), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(7, 3, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))


def _ds_1d_plain() -> nn.Sequential:
    """1-D: a depthwise conv straight after a conv (no activation between), without bias, stride 2 and
    padding 1 on an even length (TFLite's SAME pads differently: an explicit PAD), then tanh (a table
    after a depthwise conv); global average pooling."""
    return nn.Sequential(
        nn.Conv1d(3, 4, 5), nn.Conv1d(4, 4, 3, stride=2, padding=1, groups=4, bias=False), nn.Tanh(), nn.Conv1d(4, 5, 1),
        nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(5, 3))


def _dscnn(shape, channels, activation="relu"):
    from shrinknet.repair.train import dscnn

    return lambda: dscnn(shape, 5, channels=channels, activation=activation)


@functools.lru_cache(maxsize=None)
def _pruned_once() -> nn.Sequential:
    """A DS-CNN (mnist1d's shape) pruned by iterative brute force to 75% of its int8 bytes."""
    import shrinknet
    from shrinknet.store.memory import network_bytes

    model = _dscnn((1, 40), (5, 7, 6))()
    g = torch.Generator().manual_seed(7)
    X = torch.randn(48, 1, 40, generator=g)
    T = torch.randint(0, 5, (48,), generator=g)
    budget = int(network_bytes(model, "int8") * 0.75)
    config = shrinknet.PruneConfig(dtype="int8", progress=False, start_check="skip")
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm="iterative", loss="cross_entropy",
                             budget_bytes=budget, config=config)
    return result.fit(budget)[1]


def _pruned() -> nn.Sequential:
    return copy.deepcopy(_pruned_once())


DS_CASES = [
    Case("dscnn1d-relu", _dscnn((1, 40), (4, 6)), (1, 40)),
    Case("dscnn2d-relu6-odd", _dscnn((2, 9, 9), (3, 5, 7), "relu6"), (2, 9, 9)),
    Case("ds2d-stride-dil-maxpool", _ds_manual, (2, 13, 13)),
    Case("ds1d-nobias-pad-tanh", _ds_1d_plain, (3, 24)),
    Case("dscnn1d-pruned", _pruned, (1, 40)),
]


def calibration(case: Case, n: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *case.shape, generator=g) * 1.5 + 0.3




def named(name: str) -> Case:
    return next(c for c in CASES + DS_CASES if c.name == name)
