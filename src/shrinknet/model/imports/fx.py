"""A custom ``nn.Module`` -> an equivalent ``nn.Sequential``, by ``torch.fx`` symbolic tracing.

The traced graph must be one chain from one input to the output. Each node becomes a standard module:
    call_module     a Linear, Conv, BatchNorm, pooling, Flatten, activation, Identity/Dropout or a
                    Sequential of them (the very submodule; a second call of it gets a copy);
    call_function   F.relu/torch.relu, torch.sigmoid/F.sigmoid, torch.tanh/F.tanh, F.relu6, F.leaky_relu,
                    F.softplus, F.max_pool1d/2d, F.avg_pool1d/2d, F.adaptive_avg_pool1d/2d,
                    torch.flatten(x, 1), F.dropout (dropped);
    call_method     x.view/x.reshape(N, -1) (N the batch: -1, or x.size(0) / x.shape[0]) = nn.Flatten,
                    x.flatten(1), x.relu(), x.sigmoid(), x.tanh(), x.contiguous() (dropped).
A view/reshape of the input itself to (N, C, H, W) before any layer sets the input shape (C, H, W):
flat rows are then reshaped by the parser, as the module's own view did.
A residual addition ``x + self.block(x)`` (or ``self.block(x) + self.shortcut(x)``, the shortcut one
Conv, optionally with its BatchNorm) becomes ``shrinknet.Residual(block, shortcut)``: the two operands
must be chains that start at the same activation x and meet at the addition (``_residual``); then the
chain goes on from the sum. Where both operands qualify as a shortcut, the left one is the block.
Anything else (an addition of other tensors, a concat, a second input, a parameter used directly,
another function) is refused in one line naming the node and its source line (the tracer records
stack traces).
"""

from __future__ import annotations

import copy
import inspect
import operator
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ..residual import Residual
from .common import finish

_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
            nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.Sequential)

# call_function targets: (module class, its parameter names after the input, in torch's order)
_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_FUNCS = {
    F.relu: (nn.ReLU, ()), torch.relu: (nn.ReLU, ()), F.relu6: (nn.ReLU6, ()),
    torch.sigmoid: (nn.Sigmoid, ()), F.sigmoid: (nn.Sigmoid, ()), torch.tanh: (nn.Tanh, ()), F.tanh: (nn.Tanh, ()),
    F.leaky_relu: (nn.LeakyReLU, ("negative_slope",)), F.softplus: (nn.Softplus, ("beta", "threshold")),
    F.max_pool1d: (nn.MaxPool1d, _POOL), F.max_pool2d: (nn.MaxPool2d, _POOL),
    F.avg_pool1d: (nn.AvgPool1d, _AVG), F.avg_pool2d: (nn.AvgPool2d, _AVG),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
    F.dropout: (None, ("p", "training", "inplace")),
}
_METHODS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "contiguous": None}
_ADDS = (operator.add, torch.add, operator.iadd)
_COMBINE = {operator.iadd: "adds", operator.add: "adds", torch.add: "adds", operator.mul: "multiplies", torch.mul: "multiplies",
            torch.cat: "concatenates", torch.concat: "concatenates", torch.stack: "stacks"}


def _source(node, origin: str | None) -> str:
    """``file.py:LINE `code``` of the user's line that made ``node`` (from the recorded stack trace):
    the last frame in the model's own file, else the last frame outside torch."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', node.stack_trace or "")
    torch_dir = os.path.dirname(torch.__file__)
    mine = [f for f in frames if origin and os.path.abspath(f[0]) == origin] or \
           [f for f in frames if not os.path.abspath(f[0]).startswith(torch_dir)]
    if not mine:
        return "source line unknown"
    f, line, code = mine[-1]
    return f"{os.path.basename(f)}:{line} `{code.strip()}`"


def _name(node) -> str:
    t = node.target
    what = getattr(t, "__name__", None) or str(t)
    return f"{node.op} {what!s} (node {node.name!r})"


def trace(module: nn.Module) -> nn.Sequential:
    """``module`` traced into an ``nn.Sequential`` (module docstring); InputError naming the node."""
    import torch.fx as fx

    try:
        origin = os.path.abspath(inspect.getsourcefile(type(module)) or "")
    except TypeError:
        origin = None
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(module)
    except Exception as e:  # fx refuses data-dependent control flow, etc.: say so in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"torch.fx cannot trace {type(module).__name__}.forward ({msg}); write it as one chain "
                         "of layers, or give an nn.Sequential") from None
    return _Walk(module, origin).run(graph)


class _Walk:
    def __init__(self, module: nn.Module, origin: str | None):
        self.module, self.origin = module, origin
        self.mods: list[nn.Module] = []
        self.used: set[int] = set()
        self.in_shape = None
        self.batch: set = set()  # nodes that are the batch size (x.size(0), x.shape[0]) or x.shape

    def refuse(self, node, why: str):
        raise InputError(f"{type(self.module).__name__}: {_name(node)} at {_source(node, self.origin)} {why}")

    def run(self, graph) -> nn.Sequential:
        shape_reads = {n for n in graph.nodes if self._is_shape(n)}
        shape_reads |= {n for n in graph.nodes if n.op == "call_function" and n.target is operator.getitem
                        and n.args[0] in shape_reads}
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) > 1:
            self.refuse(inputs[1], "is a second input: shrinknet prunes networks with one input")
        for node in graph.nodes:  # a node that joins two activations is named first, wherever it is
            nodes = [a for a in node.all_input_nodes if a not in shape_reads and a.op != "get_attr"]
            if node.op in ("call_function", "call_method", "call_module") and len(nodes) > 1 and node.target not in _ADDS:
                kind = _COMBINE.get(node.target, "combines")
                self.refuse(node, f"{kind} two activations ({', '.join(a.name for a in nodes)}), as a residual or "
                                  "branch does: shrinknet prunes chains of layers only")
        cur = None
        done: set = set()  # nodes read into a Residual
        for node in graph.nodes:
            if node in done:
                continue
            if node.op == "placeholder":
                if cur is not None:
                    self.refuse(node, "is a second input: shrinknet prunes networks with one input")
                cur = node
                continue
            if node.op == "output":
                if node.args[0] is not cur:
                    self.refuse(node, "does not return the last layer's output alone: shrinknet prunes one chain")
                break
            if self._shape_read(node, cur):
                continue
            nodes = [a for a in node.all_input_nodes if a not in self.batch]
            if node.op == "get_attr":
                self.refuse(node, "uses a parameter or buffer directly; call an nn layer instead")
            if cur not in nodes or len(nodes) > 1:
                kind = _COMBINE.get(node.target, "combines")
                self.refuse(node, f"{kind} two activations ({', '.join(a.name for a in nodes)}), as a residual or "
                                  "branch does: shrinknet prunes chains of layers only")
            users = [u for u in cur.users if u not in self.batch and not self._is_shape(u)]
            if len(users) > 1 or node.target in _ADDS:
                cur = self._residual(cur, users, done)
                continue
            if users != [node]:
                other = next(u for u in users if u is not node)
                self.refuse(other, f"also reads {cur.name!r}, which {node.name!r} reads: the graph branches "
                                   "(shrinknet prunes chains of layers only)")
            self.step(node)
            cur = node
        return finish(self.mods, [f"{type(self.module).__name__} traced with torch.fx into {len(self.mods)} layers"],
                      self.in_shape)

    def _residual(self, x, users, done: set):
        """x branches into the two operands of one addition: a ``Residual`` (module docstring) is
        appended; returns the sum node. InputError naming the node where the graph is anything else."""
        joins = [n for n in self._after(x) if n.target in _ADDS and n.op == "call_function"]
        if not joins:
            other = next((u for u in users[1:]), users[0])
            self.refuse(other, f"also reads {x.name!r}: the graph branches and the branches do not meet at an "
                               "addition (shrinknet reads residual additions and chains of layers)")
        add = joins[0]
        if len(add.args) != 2 or add.kwargs or not all(isinstance(a, type(x)) for a in add.args):
            self.refuse(add, "is not an addition of two activations (alpha, out= or a constant operand)")
        if x.op == "placeholder":
            self.refuse(add, f"adds two activations ({', '.join(a.name for a in add.args)}) whose skip is the network's "
                             "input: a residual addition must follow a convolution (its skip is that layer's output)")
        chains = [self._chain(x, a, add) for a in add.args]
        starts = {c[0] for c in chains if c}
        if set(users) != starts | ({add} if not all(chains) else set()):
            other = next(u for u in users if u not in starts and u is not add)
            self.refuse(other, f"also reads {x.name!r}, outside the residual block that ends at {add.name!r}: the "
                               "graph branches (shrinknet reads residual additions and chains of layers)")
        if not any(chains):
            self.refuse(add, "adds an activation to itself; write 2 * x as a layer, or drop it")
        body, skip = chains
        if not body or (skip and not self._is_projection(skip) and self._is_projection(body)):
            body, skip = skip, body
        if skip and not self._is_projection(skip):
            self.refuse(add, "adds two branches neither of which is a projection (one Conv, optionally with its "
                             "BatchNorm): shrinknet reads block(x) + x and block(x) + shortcut(x)")
        outer = self.mods
        try:
            self.mods = []
            for n in body:
                self.step(n)
            block = nn.Sequential(*self.mods)
            self.mods = []
            for n in skip:
                self.step(n)
            proj = None if not skip else self.mods[0] if len(self.mods) == 1 else nn.Sequential(*self.mods)
        finally:
            self.mods = outer
        self.mods.append(Residual(block, proj))
        done.update(body, skip, [add])
        return add

    def _after(self, x):
        """Nodes that depend on x, in graph order."""
        seen, out = {x}, []
        node = x.next
        while node.op != "root":
            if any(a in seen for a in node.all_input_nodes):
                seen.add(node)
                out.append(node)
            node = node.next
        return out

    def _chain(self, x, end, add) -> list:
        """The nodes from x (excluded) to ``end`` (included), each reading only the one before and read
        only by the next (``end``: only by ``add``); [] when end is x. InputError otherwise."""
        chain, n = [], end
        while n is not x:
            ins = [a for a in n.all_input_nodes if a not in self.batch and not self._is_shape(a)]
            if len(ins) != 1 or n.op == "placeholder":
                self.refuse(n, f"is not on one chain from {x.name!r} to the addition {add.name!r}: nested or "
                               "crossing branches are not supported")
            chain.append(n)
            n = ins[0]
        chain.reverse()
        for a, b in zip(chain, chain[1:] + [add]):
            if [u for u in a.users if not self._is_shape(u)] != [b]:
                self.refuse(a, f"is read outside its residual branch (by {', '.join(u.name for u in a.users)})")
        return chain

    def _is_projection(self, chain) -> bool:
        """One Conv (groups=1), optionally with its BatchNorm (as modules or in one Sequential)."""
        if not chain or any(n.op != "call_module" for n in chain):
            return False
        mods = [self.module.get_submodule(n.target) for n in chain]
        if len(mods) == 1 and isinstance(mods[0], nn.Sequential):
            mods = list(mods[0])
        return (1 <= len(mods) <= 2 and isinstance(mods[0], (nn.Conv1d, nn.Conv2d)) and mods[0].groups == 1
                and (len(mods) == 1 or isinstance(mods[1], (nn.BatchNorm1d, nn.BatchNorm2d))))

    @staticmethod
    def _is_shape(node) -> bool:
        return (node.op == "call_method" and node.target == "size") or \
               (node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",))

    def _shape_read(self, node, cur) -> bool:
        """x.size(0), x.shape, x.shape[0] of the current activation: the batch size, read by a view."""
        if self._is_shape(node):  # any tensor's size(0) in a chain is the batch size
            if node.target == "size" and node.args[1:] != (0,) and node.kwargs.get("dim") != 0:
                self.refuse(node, "reads a size other than the batch size (dim 0); write the shape as numbers")
            self.batch.add(node)
            return True
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.batch:
            if node.args[1] != 0:
                self.refuse(node, "reads a size other than the batch size (shape[0]); write the shape as numbers")
            self.batch.add(node)
            return True
        return False

    def step(self, node) -> None:
        if node.op == "call_module":
            m = self.module.get_submodule(node.target)
            if not isinstance(m, _MODULES):
                self.refuse(node, f"is an {type(m).__name__}, which shrinknet does not prune through; supported "
                                  "layers: Linear, Conv1d/2d, BatchNorm, pooling, Flatten and activations")
            if id(m) in self.used:
                m = copy.deepcopy(m)  # a Sequential keeps one copy of a repeated child
            self.used.add(id(m))
            self.mods.append(m)
        elif node.op == "call_function" and node.target is torch.flatten:
            self._flatten(node, node.args[1:], node.kwargs)
        elif node.op == "call_function" and node.target in _FUNCS:
            cls, names = _FUNCS[node.target]
            kw = dict(zip(names, node.args[1:]), **{k: v for k, v in node.kwargs.items() if k != "inplace"})
            if cls is None:
                if kw.get("training", True) is not False and kw.get("p", 0.5):
                    self.mods.append(nn.Dropout(kw.get("p", 0.5)))  # the parser skips it, as eval mode does
                return
            kw.pop("inplace", None)
            if kw.get("return_indices"):
                self.refuse(node, "returns indices; shrinknet reads pooling without return_indices")
            try:
                self.mods.append(cls(**kw))
            except TypeError as e:
                self.refuse(node, f"has arguments shrinknet cannot read ({e})")
        elif node.op == "call_method" and node.target in ("view", "reshape"):
            self._view(node)
        elif node.op == "call_method" and node.target == "flatten":
            self._flatten(node, node.args[1:], node.kwargs)
        elif node.op == "call_method" and node.target in _METHODS and len(node.args) == 1 and not node.kwargs:
            if _METHODS[node.target] is not None:
                self.mods.append(_METHODS[node.target]())
        elif node.target in (torch.softmax, F.softmax, F.log_softmax, torch.log_softmax, "softmax", "log_softmax"):
            self.refuse(node, "is a softmax: drop it from forward and use loss='cross_entropy', which takes logits")
        elif node.target in _COMBINE:
            self.refuse(node, f"{_COMBINE[node.target]} an activation with a constant; shrinknet reads layers only")
        else:
            self.refuse(node, "is not supported: shrinknet reads nn layers, F.relu/sigmoid/tanh/relu6/leaky_relu/"
                              "softplus, F.max_pool/avg_pool, torch.flatten(x, 1), x.view/reshape(N, -1)")

    def _flatten(self, node, args, kwargs) -> None:
        start = kwargs.get("start_dim", args[0] if args else 0)
        end = kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        if start != 1 or end != -1:
            self.refuse(node, f"flattens dims {start}..{end}; shrinknet reads flatten(x, 1) (keep the batch dim)")
        self.mods.append(nn.Flatten())

    def _view(self, node) -> None:
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        first = shape[0] if shape else None
        batch = first in self.batch or first == -1
        rest = shape[1:]
        if batch and len(shape) == 2 and (rest[0] == -1 or isinstance(rest[0], int)):
            self.mods.append(nn.Flatten())  # (N, -1) or (N, features): the flatten of each instance
            return
        if batch and not self.mods and self.in_shape is None and all(isinstance(s, int) and s > 0 for s in rest):
            self.in_shape = tuple(rest)  # the input's own reshape (e.g. rows of 784 to (1, 28, 28))
            return
        self.refuse(node, f"reshapes to {tuple(getattr(s, 'name', s) for s in shape)}; shrinknet reads (N, -1) "
                          "(a flatten) or, before any layer, the input to (N, C, H, W)")
