"""The full-integer network in the pruning loop (``PruneConfig(dtype="int8", integer_only=True)``).

``--dtype int8`` puts the int8-weight network in the loop by building every network through the
storage round trip (``Refitter(storage="int8")``): it is scored, refit and recorded as stored.
``integer_only`` goes one step further, to the network that ships: for the masks of a step, the
network as the run builds it (refit, int8 weights) is cut to its kept units and quantized to full
integer (``store.integer.quantize_network``: TFLite int8 spec, activation ranges by min/max over
the calibration inputs), and

* every recorded number -- validation and test error and accuracy, hence ``max_drop``, the
  stopping rule and the kept step -- is that integer network's, evaluated by its integer reference
  forward (int8 in, int8 out, dequantized; :meth:`IntegerNet.__call__`), exactly what the
  integer-only C and TFLite Micro compute on the same int8 inputs;
* the bytes (the budget, ``Step.bytes``) are ``store.integer.integer_bytes`` of the kept network:
  int8 weights, and per output channel an int32 bias, an int32 multiplier and an int8 shift, 256
  bytes per sigmoid/tanh table; ``Step.ram_bytes`` and the RAM budget count int8 maps (one byte an
  element: ``IntegerNet.ram_bytes``, the integer-only C's scratch buffer), not float32 ones;
* brute force scores each candidate removal by the integer network's error with it removed,
  re-calibrated as it would ship (:meth:`IntegerLoop.brute_force`): Delta E = E_int(without j) -
  E_int(now).

Reading taken where the integer network cannot serve: the gradient criteria (taylor1, taylor2,
...) and the switch-off estimates need a differentiable network, and the integer network's
rounding has zero gradient almost everywhere; they score the int8-weight float network (the
``--dtype int8`` scoring network: the same int8 weights, float activations), and the choice among
steps and every recorded number stay the integer network's. The refit ("final", "every_step")
fits float layers as ``--dtype int8`` does; the integer network is quantized from the result.

Calibration: the activation ranges of every network in the loop are calibrated on the same
inputs, ``PruneConfig.X_calib`` (the command line passes the training split; default: the ranking
data), so the network recorded at the kept step is the one the exports write from the same data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InputError
from ..model.network import Data, Network, Trace
from ..model.evaluate import total_error
from ..store.integer import IntegerNet, integer_bytes, quantize_network

RULE = "activation ranges by min/max over the calibration inputs, widened to include 0 (the TFLite converter's rule)"


class IntegerLoop:
    """The integer network of any masks of one run: ``net`` the unpruned network, ``X`` the
    calibration inputs (prepared for ``net``), ``name`` what they are (it goes into the sentence
    :attr:`IntegerNet.calibration`)."""

    def __init__(self, net: Network, X, name: str = "the calibration inputs"):
        integer_bytes(net)  # refuses an activation or layer that cannot run full-integer, before any work
        X = torch.as_tensor(X)
        try:  # an MLP's rows (N, in); a CNN's (N, C, H, W), or flat rows of the known shape
            X = net.prepare_input(X)
        except ValueError:
            shape = ", ".join(map(str, net.in_shape or ("...",)))
            raise InputError(f"the integer network's calibration inputs ({name}) must have shape (N, {shape}), "
                             f"got {tuple(X.shape)}") from None
        self.net, self.X, self.name = net, X.to(net.device, net.dtype), name
        quantize_network(net.copy(), self.X, net.in_shape, name)  # refuses NaN/constant calibration inputs early

    def bytes(self, masks) -> int:
        """Stored bytes of the integer network of ``masks`` (``integer_bytes``)."""
        return integer_bytes(self.net, masks)

    def network(self, built: Network, masks) -> IntegerNet:
        """The full-integer network of ``built`` (a network as the run builds it for ``masks``,
        original shapes) cut to its kept units and calibrated on the run's calibration inputs."""
        small = built.shrink(built.check_masks(masks))
        return quantize_network(small, self.X, self.net.in_shape, self.name)

    @staticmethod
    def traces(inet: IntegerNet, parts) -> list[tuple[Data, Trace]]:
        """(data, trace) pairs whose output ``trace.o[-1]`` is the integer network's dequantized output."""
        out = []
        for d, *_ in parts:
            y = inet(d.X.detach().cpu()).to(d.X.device, d.X.dtype)
            out.append((d, Trace(o=[y])))
        return out

    def brute_force(self, builder, masks, val, loss) -> list[Tensor]:
        """Exact Delta E of removing each kept unit on the integer network (module docstring): each
        candidate's network is built by ``builder`` (the run's scoring builder), quantized and
        evaluated on the ranking data ``val`` ((Data, trace) pairs)."""
        with torch.no_grad():
            err0 = total_error(loss, self.traces(self.network(builder.build(masks), masks), val))
            out = []
            for h, m in enumerate(masks):
                s = torch.full(m.shape, math.inf, dtype=torch.float64)
                if int(m.sum()) > 1:
                    for j in m.nonzero().squeeze(1).tolist():
                        cand = list(masks)
                        cand[h] = m.clone()
                        cand[h][j] = False
                        inet = self.network(builder.build(cand), cand)
                        s[j] = total_error(loss, self.traces(inet, val)) - err0
                out.append(s.to(self.net.dtype))
        return out
