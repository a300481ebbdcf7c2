"""C99 source of a network with residual additions (model/layers/resnet.py): emit.py's conventions
(batch 1, NCHW, ``static const`` weights, one static float scratch buffer) with the skip kept.

The ops are ``ResNet.tape``'s, in order: a layer with weights or a pooling writes a new map, an
activation works in place, a projection writes its own map, an addition adds the skip (or the
projection's map) into the branch's map in place. The scratch buffer holds exactly
``ResNet.ram_floats()`` floats -- the peak of the live maps -- because every map is placed at one
end of the free region:

- outside a residual branch the free region is the whole buffer, and consecutive maps sit at its
  opposite ends (emit.py's ping-pong);
- a skip x stays where it was written, at one end, until its addition; the branch runs in the rest
  of the buffer, its maps again at alternating ends of that region. The branch's first map (read
  from x alone) is free to take either end: it takes the one that leaves the map the addition
  writes into at the far end from x, so that after the addition (x freed) the next map fits at x's
  end. A projection's map goes to the end of the region the branch's map does not hold.

At every op the maps in use (its input, its output, a held skip, a projection's map) are then
disjoint, and they are exactly the live maps the RAM rule sums, so they fit in the buffer.
"""

from __future__ import annotations

import math

from . import names
from .emit import (
    _C_INCLUDES,
    _C_PRELUDE,
    _c_arrays,
    _c_weight,
    _stored_as,
    c_float,
    c_header,
)


def c_sources_residual(net, stored, dtype: str, prefix: str, header_name: str, flash: int,
                       meta: dict | None) -> tuple[str, str, int]:
    """(header, source, RAM bytes) as ``emit.c_sources`` gives them, for a ``ResNet``."""
    scratch = net.ram_floats()
    ram = 4 * scratch
    shape = "x".join(map(str, net.in_shape)) + ", NCHW"
    describe = net.describe()
    banner, header = c_header(
        prefix, [f"Network ({_stored_as(dtype)}; input {shape}, batch 1):",
                 *(f"  layer {k}: {d}" for k, d in enumerate(describe))],
        dtype, flash, ram, f"one static buffer of {scratch} floats: the peak of the maps live at once in a "
        "batch-1 forward pass (a residual skip is held until its addition)", meta, math.prod(net.in_shape),
        net.out_features, ", input in NCHW order")
    shapes = net.map_shapes()

    def c3(s: tuple) -> tuple:
        return s if len(s) == 3 else (s[0], 1, 1)

    # the region maps go into: [lo, hi) of the buffer; ``at_low``: whether the current map is at lo
    lo, hi = 0, scratch
    cur, cur_shape, cur_low = "input", c3((net.in_shape[0], 1, net.in_shape[1]) if net.dims == 1 else tuple(net.in_shape)), False
    held = None  # (place, size, low) of the skip being held, and its region before
    outs = {}  # block -> (place, shape, at_low)
    starts = {a.src + 1: a for a in net.adds}
    arrays, body = [], []
    last = len(net.blocks) - 1

    def writes_in_branch(a) -> int:
        """Maps written from the branch's first op to the map the addition writes into."""
        n = 0
        for kk in range(a.src + 1, a.dst + 1):
            b = net.blocks[kk]
            n += 1 + sum(op.kind != "act" for op in (b.tail[: a.at] if kk == a.dst else b.tail))
        return n

    def place(size: int, low: bool) -> tuple[str, bool]:
        return (f"(scratch + {lo})", True) if low else (f"(scratch + {hi - size})", False)

    for k, (b, w) in enumerate(zip(net.blocks, stored)):
        a = net.add_of.get(k)
        arrays.append(f"/* {names.c_comment(f'layer {k}: {describe[k]}')} */\n" + _c_arrays(k, w)
                      + ("" if w.proj is None else _c_arrays(f"{k}_skip", w.proj)))
        first = None
        if k in starts:  # a branch starts: hold its skip (the current map) at its end
            s = starts[k]
            size = math.prod(cur_shape)
            held = (cur, size, cur_low, lo, hi)
            lo, hi = (lo + size, hi) if cur_low else (lo, hi - size)
            n = writes_in_branch(s)
            far_low = not cur_low  # the far end from the skip
            first = far_low if n % 2 == 1 else cur_low  # the first map's end, so that the last is at far_low
        out_shape = c3(shapes[k][0])
        if k == last:
            dst, low = "output", False
        else:
            low = first if first is not None else not cur_low
            dst, low = place(math.prod(out_shape), low)
        body.append(b.param.c_code(cur, dst, _c_weight(k, dtype), None if w.bias is None else f"layer{k}_bias",
                                   cur_shape, out_shape))
        cur, cur_shape, cur_low = dst, out_shape, low
        for i, op in enumerate([*b.tail, None]):
            if a is not None and i == a.at:
                skip, skip_shape, _ = outs[a.src]
                n = math.prod(cur_shape)
                if a.proj is not None:
                    p_dst, _ = place(n, not cur_low)
                    body.append(a.proj.c_code(skip, p_dst, _c_weight(f"{k}_skip", dtype),
                                              None if w.proj.bias is None else f"layer{k}_skip_bias",
                                              skip_shape, cur_shape))
                    skip = p_dst
                body.append(f"""{{ /* residual addition: + {'projection of ' if a.proj is not None else ''}layer {a.src}'s output, in place */
        float *v = {cur};
        const float *s = {skip};
        int i;
        for (i = 0; i < {n}; i++)
            v[i] += s[i];
    }}""")
                lo, hi = held[3], held[4]  # the skip is freed
                held = None
            if op is None:
                break
            new_shape = c3(shapes[k][i + 1])
            if op.kind == "act":
                expr = op.c_expr("v[i]", c_float, k)
                if expr is not None:
                    body.append(f"""{{ /* {names.c_comment(op.describe())}, in place */
        float *v = {cur};
        int i;
        for (i = 0; i < {math.prod(new_shape)}; i++)
            v[i] = {expr};
    }}""")
                continue
            dst, low = place(math.prod(new_shape), not cur_low)
            body.append(op.c_code(cur, dst, cur_shape, new_shape))
            cur, cur_shape, cur_low = dst, new_shape, low
        outs[k] = (cur, cur_shape, cur_low)
    source = (
        banner + "\n" + "".join(f"#include {inc}\n" for inc in _C_INCLUDES[dtype])
        + f'\n#include "{names.c_include_name(header_name)}"\n\n'
        + _C_PRELUDE[dtype] + "\n" + "\n".join(arrays)
        + f"\nstatic float scratch[{scratch}];\n\n"
        + f"void {prefix}_forward(const float *input, float *output)\n{{\n    "
        + "\n    ".join(body) + "\n}\n"
    )
    return header, source, ram
