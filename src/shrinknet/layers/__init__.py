"""The general (CNN) path: one module per layer type, as BackPACK keeps them.

    act.py     activations: forward, eqs. 74-75, ONNX node, C expression
    conv.py    Conv1d/Conv2d: forward, eq. 73 as a transposed convolution (squared kernel for
               the second derivative), brute force's per-channel contribution, surgery,
               parameter count, ONNX node, C loops
    linear.py  Linear (also after Flatten, where a channel owns a block of columns): the same
    pool.py    max / average / adaptive average pooling: forward, derivatives, ONNX, C
    net.py     SeqNet: blocks strung together (forward, sweep, brute force, gates, memory, surgery)
    parse.py   nn.Sequential -> SeqNet (BatchNorm folded) or the MLP's Net
    export.py  ONNX graph and C99 source of a SeqNet
    io.py      the model-file description of a SeqNet

The MLP keeps its own specialised kernels (network.Net, saliency.brute_force, backprop2.sweep);
an MLP parsed here (``parse(model)``) gives the same scores through these modules (tested).
"""

from .net import Block, SeqNet
from .parse import needs_general, parse

__all__ = ["Block", "SeqNet", "needs_general", "parse"]
