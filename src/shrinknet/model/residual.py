"""``shrinknet.Residual``: a residual addition as a module that fits inside ``nn.Sequential``.

    Residual(block)               y = block(x) + x              (identity skip)
    Residual(block, projection)   y = block(x) + projection(x)  (e.g. a 1x1 convolution, + BatchNorm)

``block`` is an ``nn.Sequential`` (or one layer) of the layers shrinknet reads (convolutions,
BatchNorm, activations, pooling); ``projection`` one ``nn.Conv1d/2d`` (groups=1), optionally
followed by its ``nn.BatchNorm`` in an ``nn.Sequential``. What follows the Residual in the outer
``nn.Sequential`` (typically a ReLU) acts on the sum, as in ResNet's ``relu(bn2(conv2(..)) + x)``.

A custom ``nn.Module`` whose forward writes ``x + self.block(x)`` (or ``self.block(x) +
self.shortcut(x)``) is traced by ``torch.fx`` into this container (model/imports/fx.py), so both
spellings are one structure for the parser (parse.py) and the network (layers/resnet.py).
"""

from __future__ import annotations

from torch import Tensor, nn


class Residual(nn.Module):
    """``forward(x) = block(x) + (x if projection is None else projection(x))``.

    The channels joined by the addition are one group for pruning (layers/resnet.py): removing
    channel c of the group removes it from every layer that produces or reads it.
    """

    def __init__(self, block: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.block = block
        self.projection = projection

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + (x if self.projection is None else self.projection(x))

    def extra_repr(self) -> str:
        return "identity skip" if self.projection is None else "projection skip"
