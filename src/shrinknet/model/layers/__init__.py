"""The layer modules, one per layer type, as BackPACK keeps them; both networks are made of them.

    act.py     activations: forward, eqs. 74-75, ONNX node, C expression
    conv.py    Conv1d/Conv2d: forward, eq. 73 as a transposed convolution (squared kernel for
               the second derivative), brute force's per-channel contribution, surgery,
               parameter count, ONNX node, C loops
    linear.py  Linear (also after Flatten, where a channel owns a block of columns): the same
    pool.py    max / average / adaptive average pooling: forward, derivatives, ONNX, C
    depthwise.py  depthwise Conv1d/Conv2d (channel multiplier 1): a weighted op in the tail of the
               block whose channels it reads (its channel rides along with the producer's unit)
    net.py     Block (a layer module + its tail: the layer of both networks; ``Block.linear`` is an
               MLP layer) and SeqNet, the general network (its brute force, gates, 1-D and Flatten)

``network.Network`` strings the blocks together once for both (forward, the eqs. 73-75 sweep,
switch-off, memory, surgery, conversion). The MLP's ``network.Net`` keeps its specialised brute
force (exact.py: fused chunks, threads, reuse between steps); an MLP parsed as a SeqNet
(``parse(model)``) gives the same scores through the general code (tested).
"""

from .net import Block, SeqNet
__all__ = ["Block", "SeqNet"]
