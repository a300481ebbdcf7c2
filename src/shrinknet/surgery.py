"""Surgery: cut switched-off neurons out for real.

Removing neuron j of hidden layer h drops row j of layer h's weight and bias and column j of
layer h+1's weight. The result computes exactly what the masked network computes: a neuron
whose output is 0 contributes nothing through its outgoing weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import Layer, Masks, Net, as_net


def shrink(model, masks: Masks) -> nn.Sequential:
    """A new, physically smaller ``nn.Sequential`` keeping only the neurons where ``masks`` is True.

    Args:
        model: ``nn.Sequential`` (or Net) of Linear layers and elementwise activations.
        masks: one bool tensor per hidden layer, True = kept; each keeps at least one neuron.

    The input model is not modified; weights are copied.
    """
    net = as_net(model)
    masks = net.check_masks(masks)
    if getattr(net, "general", False):  # channels: layers/conv.py and layers/linear.py ``keep``
        return net.shrink(masks).to_sequential()
    layers = []
    for k, layer in enumerate(net.layers):
        W, b = layer.weight, layer.bias
        if k < net.n_hidden:  # rows of this layer: its own neurons
            rows = masks[k].nonzero().squeeze(1)
            W = W[rows]
            b = None if b is None else b[rows]
        if k > 0:  # columns of this layer: the neurons of the layer below
            W = W[:, masks[k - 1].nonzero().squeeze(1)]
        layers.append(Layer(W.clone(), None if b is None else b.clone(), layer.act))
    return Net(layers).to_sequential()


def kept_indices(masks: Masks) -> list[list[int]]:
    """Original indices of the kept neurons of every hidden layer."""
    return [torch.as_tensor(m).nonzero().squeeze(1).tolist() for m in masks]
