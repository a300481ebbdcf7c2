"""Tiny float64 networks from a table of settings, and slow obviously-correct references."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACT_MODULES = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": lambda: nn.Softplus(beta=1.5),
    "none": None,
}


@dataclass(frozen=True)
class Setting:
    act: str  # hidden activation
    loss: str
    depth: int  # number of hidden layers
    bias: bool
    out_act: str = "none"

    @property
    def id(self) -> str:
        return f"{self.act}-{self.loss}-d{self.depth}-{'bias' if self.bias else 'nobias'}-out_{self.out_act}"


def settings() -> list[Setting]:
    """activation x loss x depth; bias and output activation vary along the table so that every
    activation meets both bias settings and (for MSE) every output activation."""
    table = []
    for a, act in enumerate(ACT_MODULES):
        for l, loss in enumerate(("mse", "cross_entropy")):
            for depth in (1, 2, 3):
                out_act = "none" if loss == "cross_entropy" else ("none", "sigmoid", "tanh")[(a + depth) % 3]
                table.append(Setting(act, loss, depth, bias=(a + l + depth) % 2 == 0, out_act=out_act))
    return table


SETTINGS = settings()
WIDTHS = (5, 7, 3, 5)  # input, then hidden widths (odd)
N_OUT = 3


def build(s: Setting, seed: int = 0, n: int = 11):
    """(model, blocks, X, T) in float64; blocks is a list of (Linear, activation module or None)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [WIDTHS[0], *WIDTHS[1 : 1 + s.depth], N_OUT]
    blocks = []
    for k in range(len(sizes) - 1):
        lin = nn.Linear(sizes[k], sizes[k + 1], bias=s.bias, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64))
            if s.bias:
                lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))
        last = k == len(sizes) - 2
        name = s.out_act if last else s.act
        act = ACT_MODULES[name]() if ACT_MODULES[name] is not None else None
        blocks.append((lin, act))
    model = nn.Sequential(*[m for b in blocks for m in b if m is not None])
    X = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    if s.loss == "mse":
        T = torch.rand(n, N_OUT, generator=g, dtype=torch.float64)
    else:
        T = torch.randint(0, N_OUT, (n,), generator=g)
    return model, blocks, X, T


def ref_error(y, T, loss):
    """Total error E = sum_n E_n, straight from torch."""
    if loss == "mse":
        return 0.5 * ((y - T) ** 2).sum()
    return F.cross_entropy(y, T, reduction="sum")


def total_error(model, X, T, loss) -> float:
    with torch.no_grad():
        return float(ref_error(model(X), T, loss))


def run_blocks(blocks, h, start, masks, stop=None):
    """Apply blocks[start:stop] to h; masks multiply hidden outputs."""
    for k in range(start, len(blocks) if stop is None else stop):
        lin, act = blocks[k]
        h = lin(h)
        if act is not None:
            h = act(h)
        if k < len(blocks) - 1 and masks is not None:
            h = h * masks[k]
    return h


def hidden_output(blocks, X, h, masks):
    return run_blocks(blocks, X, 0, masks, stop=h + 1)


def error_from_hidden(blocks, o, h, T, loss, masks):
    return ref_error(run_blocks(blocks, o, h + 1, masks), T, loss)


def literal_brute_force(model, X, T, loss, masks=None):
    """Switch each kept neuron off by zeroing its outgoing weights, re-evaluate E, subtract."""
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def error_with_off(off):
        m2 = copy.deepcopy(model)
        lins = [m for m in m2 if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for h, j in off:
                lins[h + 1].weight[:, j] = 0
            return float(ref_error(m2(X), T, loss))

    removed = []
    if masks is not None:
        removed = [(h, j) for h, m in enumerate(masks) for j in range(len(m)) if not m[j]]
    base = error_with_off(removed)
    out = []
    for h in range(len(linears) - 1):
        s = []
        for j in range(linears[h].out_features):
            if (h, j) in removed:
                s.append(float("inf"))
            else:
                s.append(error_with_off(removed + [(h, j)]) - base)
        out.append(torch.tensor(s, dtype=torch.float64))
    return out


def per_instance_hessian_diag(blocks, X, T, h, loss, masks=None):
    """(N, j) exact d2E_n/do_nj^2 from torch.autograd.functional.hessian, one instance at a time."""
    with torch.no_grad():
        o = hidden_output(blocks, X, h, masks)
    rows = []
    for n in range(X.shape[0]):
        t = T[n : n + 1]
        H = torch.autograd.functional.hessian(
            lambda v: error_from_hidden(blocks, v.unsqueeze(0), h, t, loss, masks), o[n]
        )
        rows.append(torch.diagonal(H))
    return o, torch.stack(rows)


SIGMA = {
    # name: (sigma, sigma', sigma'') as plain numpy functions of x, written out independently
    "sigmoid": (
        lambda x: 1 / (1 + np.exp(-x)),
        lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
        lambda x: np.exp(-x) * (np.exp(-x) - 1) / (1 + np.exp(-x)) ** 3,
    ),
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2, lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0, lambda x: 0 * x),
    "softplus": (
        lambda x: np.log1p(np.exp(1.5 * x)) / 1.5,
        lambda x: 1 / (1 + np.exp(-1.5 * x)),
        lambda x: 1.5 * np.exp(-1.5 * x) / (1 + np.exp(-1.5 * x)) ** 2,
    ),
    "none": (lambda x: x, lambda x: 1 + 0 * x, lambda x: 0 * x),
}


def loop_backprop2(blocks, X, T, s: Setting):
    """eqs. 73-75 written out with explicit loops over instances and neurons, in numpy.

    Returns [(dE_do, d2E_do2)] per hidden layer in forward order.
    """
    Ws = [lin.weight.detach().numpy() for lin, _ in blocks]
    bs = [lin.bias.detach().numpy() if lin.bias is not None else np.zeros(lin.out_features) for lin, _ in blocks]
    names = [s.act] * (len(blocks) - 1) + [s.out_act]
    Xn = X.numpy()
    if s.loss == "cross_entropy":
        Tn = np.eye(N_OUT)[T.numpy()]
    else:
        Tn = T.numpy()
    N = Xn.shape[0]
    L = len(blocks)
    res_g = [np.zeros((N, Ws[k].shape[0])) for k in range(L - 1)]
    res_h = [np.zeros((N, Ws[k].shape[0])) for k in range(L - 1)]
    for n in range(N):
        xs, os_ = [], []
        inp = Xn[n]
        for k in range(L):
            x = np.array([sum(Ws[k][i, j] * inp[j] for j in range(len(inp))) + bs[k][i] for i in range(Ws[k].shape[0])])
            o = SIGMA[names[k]][0](x)
            xs.append(x)
            os_.append(o)
            inp = o
        y = os_[-1]
        if s.loss == "mse":
            g_o = y - Tn[n]  # eq. 13
            h_o = np.ones_like(y)  # eq. 14
        else:
            p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
            g_o = p - Tn[n]
            h_o = p * (1 - p)
        for k in range(L - 1, 0, -1):
            s1 = SIGMA[names[k]][1](xs[k])
            s2 = SIGMA[names[k]][2](xs[k])
            g_x = [g_o[i] * s1[i] for i in range(len(s1))]  # eq. 74
            h_x = [h_o[i] * s1[i] ** 2 + g_o[i] * s2[i] for i in range(len(s1))]  # eq. 75
            J = Ws[k].shape[1]
            g_o = np.array([sum(g_x[i] * Ws[k][i, j] for i in range(len(g_x))) for j in range(J)])  # eq. 73
            h_o = np.array([sum(h_x[i] * Ws[k][i, j] ** 2 for i in range(len(h_x))) for j in range(J)])  # eq. 73
            res_g[k - 1][n] = g_o
            res_h[k - 1][n] = h_o
    return list(zip(res_g, res_h))


def train_blobs(invoke, tmp, out_name: str):
    """Three well separated Gaussian blobs in 4-D saved as tmp/blobs.npz, and a 4-7-5-3 network trained on
    them through the CLI (``invoke``: a CliRunner call) into tmp/out_name; returns its model file."""
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 300)
    X = (g.normal(size=(300, 4)) + np.eye(3, 4)[y] * 2.5).astype(np.float32)
    np.savez(tmp / "blobs.npz", X=X, y=y)
    r = invoke("train", "--data", tmp / "blobs.npz", "--hidden", "7,5", "--epochs", "40", "--out", tmp / out_name)
    assert r.exit_code == 0, r.output
    return tmp / out_name / "model.safetensors"


def require_float_platform(pinned, what: str, remedy: str) -> None:
    """Fail (never skip) when this torch build or CPU kernel set is not the one bitwise float pins were
    computed on: ``pinned`` = (torch.__version__, torch.backends.cpu.get_cpu_capability()) there.
    Bitwise float results differ between torch builds and kernels (AVX2 vs AVX512 reductions), so
    such pins cannot be checked elsewhere; a silent skip would hide that nothing was compared."""
    import pytest

    here = (torch.__version__, torch.backends.cpu.get_cpu_capability())
    if here != tuple(pinned):
        pytest.fail(f"{what} were computed on torch {pinned[0]} with {pinned[1]} CPU kernels; this machine runs "
                    f"torch {here[0]} with {here[1]} kernels, where bitwise float results may differ, so they "
                    f"cannot be checked here. {remedy}", pytrace=False)


def damaged_outcomes(data: bytes, path, trials: int, rng) -> set[str]:
    """Import ``trials`` damaged copies of a model file's bytes (truncated every fourth trial, 1-6 bytes
    flipped) written to ``path``: the set of what each gave, a module type name or "InputError" (whose
    message must be one line). Anything else escapes and fails the calling test."""
    from shrinknet.errors import InputError
    from shrinknet.model.imports import to_sequential

    outcomes = set()
    for trial in range(trials):
        b = bytearray(data[: rng.randint(1, len(data))] if trial % 4 == 0 else data)
        for pos in rng.randint(0, len(b), size=1 + trial % 6):
            b[pos] = rng.randint(256)
        path.write_bytes(bytes(b))
        try:
            outcomes.add(type(to_sequential(path)).__name__)
        except InputError as e:
            assert "\n" not in str(e)
            outcomes.add("InputError")
    return outcomes


def litert_outputs(data: bytes, xs: np.ndarray) -> np.ndarray | None:
    """LiteRT's interpreter (ai-edge-litert, optimized kernels) on the .tflite ``data``, one row of ``xs`` at a time
    (the files have batch 1), each output flattened; None where ai-edge-litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    got = []
    for x in xs:
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1))
    return np.stack(got)
