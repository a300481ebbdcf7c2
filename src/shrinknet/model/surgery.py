"""Surgery: cut switched-off neurons out for real.

Removing neuron j of hidden layer h drops row j of layer h's weight and bias and column j of
layer h+1's weight (a channel: the conv's output channel, the next conv's input channel, or the
block of columns it feeds after Flatten). The result computes exactly what the masked network
computes: a unit whose output is 0 contributes nothing through its outgoing weights. Each layer
module cuts itself (``keep`` in layers/linear.py and layers/conv.py); ``Network.shrink`` strings
them together. A depthwise conv in a block's tail (layers/depthwise.py) loses the same channels as
its producer; a removed depthwise channel outputs a constant map (its bias, through the rest of the
tail), and the next layer's response to it is added to that layer's bias, so the cut network
still computes exactly what the masked one does.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import Masks
from .parse import as_net


def shrink(model, masks: Masks) -> nn.Sequential:
    """A new, physically smaller ``nn.Sequential`` keeping only the neurons where ``masks`` is True.

    Args:
        model: ``nn.Sequential`` (or a parsed network): an MLP or a CNN (see ``as_net``).
        masks: one bool tensor per hidden layer, True = kept; each keeps at least one neuron.

    The input model is not modified; weights are copied.
    """
    net = as_net(model)
    return net.shrink(net.check_masks(masks)).to_sequential()


def kept_indices(masks: Masks) -> list[list[int]]:
    """Original indices of the kept neurons of every hidden layer."""
    return [torch.as_tensor(m).nonzero().squeeze(1).tolist() for m in masks]
