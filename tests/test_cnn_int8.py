"""int8 storage of convolutional networks, over the table of tiny CNNs (cnn_helpers.SETTINGS).

Slow twins: each output channel quantized on its own in a literal loop (``per_channel_int8``);
bytes counted by hand and from the modules' shapes; the int8 (+ refit) network rebuilt literally
from the physically shrunk torch modules -- refit one layer by an independent least-squares solve
over its unfolded input patches, quantize it, feed the next -- in float64; recorded errors
re-evaluated on ``network(k)`` with plain torch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet.store.memory import network_bytes
from shrinknet.store.quantize import dequantize, quantize_rows
from shrinknet.repair.refit import DEFAULT_RIDGE, Refitter
from shrinknet.model.surgery import shrink

from cnn_helpers import SETTINGS, build, ref_error
from test_cnn_export import WEIGHTED, _flash_by_count, per_channel_int8
from test_refit import lstsq_ridge, masks_for

IDS = [s.id for s in SETTINGS]


def _weighted(model) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, WEIGHTED)]


# -- quantizing kernels -------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_kernels_quantize_per_output_channel_and_requantize_exactly(s):
    model, _, _, _ = build(s)
    net = shrinknet.as_net(model.float())
    for W in [b.weight for b in net.blocks] + [m.weight.detach() for m in _weighted(model.float())]:
        q, scale = quantize_rows(W)
        assert q.dtype == torch.int8 and q.shape == W.shape and scale.shape == (W.shape[0],)
        assert torch.equal(dequantize(q, scale), per_channel_int8(W))  # the literal per-channel loop
        half_step = scale.view(-1, *[1] * (W.ndim - 1)).double() / 2
        assert bool(((dequantize(q, scale).double() - W.double()).abs() <= half_step * (1 + 1e-6)).all())
        q2, scale2 = quantize_rows(dequantize(q, scale))  # idempotent: export rebuilds the run's ints
        assert torch.equal(q2, q) and torch.equal(scale2, scale)


@pytest.mark.parametrize("seed", range(4))
def test_a_kernel_scale_is_its_channels_largest_weight_over_127(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(5, 3, 2, 4, generator=g) * 10 ** (seed - 2)
    W[2] = 0  # an all-zero output channel: scale 1, all q 0
    q, scale = quantize_rows(W)
    assert int(q.abs().max()) == 127 and bool((q[2] == 0).all()) and float(scale[2]) == 1.0
    keep = [0, 1, 3, 4]
    assert_close(scale[keep], (W.reshape(5, -1).abs().amax(1) / 127)[keep], rtol=1e-6, atol=0)


# -- bytes ----------------------------------------------------------------------------------------
def test_int8_bytes_equal_the_hand_count():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, (2, 1), bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 3 * 4, 5), nn.ReLU(), nn.Linear(5, 2))
    # conv 4 x (2*3*3) int8 + 4 scales + 4 biases; conv 3 x (4*2*1) + 3 scales; linear 5 x 36 + 5 + 5; 2 x 5 + 2 + 2
    assert network_bytes(model, "int8") == (72 + 16 + 16) + (24 + 12) + (180 + 20 + 20) + (10 + 8 + 8)
    masks = [torch.tensor([True, False, True, True]), torch.tensor([False, True, True]),
             torch.tensor([True, True, False, True, True])]
    # kept 3, 2, 4 units: 3 x 18 + 12 + 12; 2 x (3*2) + 8; 4 x (2 channels * 12 positions) + 16 + 16; 2 x 4 + 8 + 8
    want = (54 + 12 + 12) + (12 + 8) + (96 + 16 + 16) + (8 + 8 + 8)
    assert network_bytes(model, "int8", masks) == want
    small = shrink(model, masks)
    assert network_bytes(small, "int8") == _flash_by_count(small, "int8") == want
    conv1d = nn.Sequential(nn.Conv1d(1, 3, 5), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6, 2))
    assert network_bytes(conv1d, "int8") == (15 + 12 + 12) + (36 + 8 + 8)


# -- int8 (+ refit) networks against a literal twin ---------------------------------------------
def _patches(mod: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The rows of layer ``mod``'s least squares on its input h: (N * positions, weights per output unit)."""
    if isinstance(mod, nn.Linear):
        return h
    if isinstance(mod, nn.Conv1d):
        h, k, d, p, st = h.unsqueeze(2), (1, *mod.kernel_size), (1, *mod.dilation), (0, *mod.padding), (1, *mod.stride)
    else:
        k, d, p, st = mod.kernel_size, mod.dilation, mod.padding, mod.stride
    cols = F.unfold(h, k, d, p, st)  # (N, c*kh*kw, positions)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def literal_int8(model, masks, X, refit: bool, ridge: float = DEFAULT_RIDGE) -> nn.Sequential:
    """The network as an int8 run stores it: every weight quantized channel by channel, biases as they are."""
    def store(m):
        m.weight.copy_(per_channel_int8(m.weight))

    return literal_stored(model, masks, X, refit, store, ridge)


def literal_stored(model, masks, X, refit: bool, store, ridge: float = DEFAULT_RIDGE) -> nn.Sequential:
    """The network as a run stores it, built from plain torch modules: shrink physically, then
    layer by layer from the input up: (from the first refit layer on) solve the layer's ridge
    least squares to the unpruned network's pre-activations of its kept units, fed by the stored
    layers below; ``store(module)`` rounds the layer's parameters in place; feed the next."""
    ref = shrinknet.as_net(model).to_sequential()  # BatchNorm folded: a conv's output is its pre-activation
    small = shrink(ref, masks)
    first = min(h for h, m in enumerate(masks) if not bool(m.all())) + 1 if refit else len(masks) + 1
    k = -1
    with torch.no_grad():
        h_ref, h_small = X, X
        for mo, ms in zip(ref, small):
            if isinstance(mo, WEIGHTED):
                k += 1
                if k >= first:
                    target = mo(h_ref)
                    if k < len(masks):
                        target = target[:, masks[k]]
                    rows = target.flatten(2).transpose(1, 2).reshape(-1, target.shape[1]) if target.ndim > 2 else target
                    W, b = lstsq_ridge(_patches(ms, h_small), rows, ridge, ms.bias is not None)
                    ms.weight.copy_(W.view_as(ms.weight))
                    if b is not None:
                        ms.bias.copy_(b)
                store(ms)
            h_ref, h_small = mo(h_ref), ms(h_small)
    return small


@pytest.mark.parametrize("refit", [False, True], ids=["switch-off", "refit"])
@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_int8_network_equals_the_literal_twin(s, refit):
    model, _, X, _ = build(s, n=40)  # float64: the two solves agree far below an int8 step
    net = shrinknet.as_net(model)
    for seed in range(2):
        masks = masks_for(model, seed)
        fast = shrink(Refitter(net, X if refit else None, refit=refit, int8=True).build(masks), masks)
        slow = literal_int8(model, masks, X, refit)
        for a, b in zip(_weighted(fast), _weighted(slow)):
            assert torch.equal(a.weight, b.weight)  # the same int8 values and scales
            if a.bias is not None:
                assert_close(a.bias, b.bias, rtol=1e-9, atol=1e-12)
        with torch.no_grad():
            assert_close(fast(X), slow(X), rtol=1e-9, atol=1e-10)


def test_removed_input_channels_do_not_set_a_kernels_scale():
    """A removed channel with the largest weights in the next kernel: the kept weights get the
    finer scale of the kept ones, as in the physically smaller kernel."""
    s = SETTINGS[3]  # two convolutions
    model, _, X, _ = build(s, n=20)
    net = shrinknet.as_net(model)
    W = net.blocks[1].param.weight
    with torch.no_grad():
        W[:, 0] *= 50  # channel 0 of hidden layer 0 dominates every kernel of layer 1
    masks = [torch.tensor([False, True, True, True]), torch.ones(net.hidden_sizes[1], dtype=torch.bool)]
    built = Refitter(net, None, refit=False, int8=True).build(masks)
    kept = built.blocks[1].param.weight[:, 1:]
    assert torch.equal(kept, per_channel_int8(W[:, 1:]))
    assert not torch.equal(kept, per_channel_int8(W)[:, 1:])  # what the removed channel's scale would give


# -- prune(..., dtype="int8") ------------------------------------------------------------------
REFITS = [None, "final", "every_step"]


@pytest.mark.parametrize("s,refit", [(s, REFITS[i % 3]) for i, s in enumerate(SETTINGS)],
                         ids=[f"{s.id}-refit_{REFITS[i % 3]}" for i, s in enumerate(SETTINGS)])
def test_prune_int8_hands_out_dequantized_networks_and_records_their_errors(s, refit, tmp_path):
    model, _, X, T = build(s, n=30)
    model, X = model.float(), X.float()
    T = T.float() if s.loss == "mse" else T
    Xt, Tt = X[:12] * 1.1, T[:12]
    budget = network_bytes(model, "int8") - 60
    result = shrinknet.prune(model, X, T, loss=s.loss, dtype="int8", refit=refit, budget_bytes=budget,
                             X_test=Xt, T_test=Tt, progress=False)
    assert result.steps[-1].bytes <= budget < result.steps[-2].bytes
    for k, step in enumerate(result.steps):
        small = result.network(k)
        for m in _weighted(small):  # exactly dequantized int8, channel by channel
            assert torch.equal(m.weight, per_channel_int8(m.weight))
        with torch.no_grad():  # the recorded errors are those of the network handed out
            assert step.error == pytest.approx(float(ref_error(small(X).double(), T, s.loss)), rel=1e-5, abs=1e-6)
            assert step.test_error == pytest.approx(float(ref_error(small(Xt).double(), Tt, s.loss)), rel=1e-5, abs=1e-6)
        assert step.bytes == network_bytes(small, "int8") == _flash_by_count(small, "int8")
        assert step.kept == [m.weight.shape[0] for m in _weighted(small)[:-1]]
    k, small = result.fit(budget)
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    shrinknet.export(small, tmp_path / "m.onnx", format="onnx", dtype="int8")  # rebuilds the run's ints exactly
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    for i, m in enumerate(_weighted(small)):
        q, scale = (torch.tensor(inits[f"layers.{i}.weight{x}"]) for x in ("", "_scale"))
        assert torch.equal(dequantize(q, scale), m.weight.detach())


@pytest.mark.parametrize("s", SETTINGS[:2], ids=IDS[:2])
def test_int8_named_as_torch_dtype_is_the_same_run_and_float64_is_refused(s):
    model, _, X, T = build(s, n=20)
    runs = [shrinknet.prune(model.float(), X.float(), T.float() if s.loss == "mse" else T, loss=s.loss, dtype=d,
                            max_fraction=0.4, progress=False) for d in ("int8", torch.int8)]
    assert runs[0].steps == runs[1].steps and runs[1].config["dtype"] == "int8"
    with pytest.raises(ValueError, match="int8 storage runs in float32"):  # .float() above worked in place
        shrinknet.prune(model.double(), X, T, loss=s.loss, dtype="int8", max_fraction=0.4, progress=False)


def test_finetuned_int8_cnn_is_requantized_per_channel():
    from shrinknet.repair import retrain

    s = SETTINGS[6]  # cross-entropy
    model, _, X, T = build(s, n=40)
    model, X = model.float(), X.float()
    small = shrinknet.prune(model, X, T, loss=s.loss, dtype="int8", max_fraction=0.3, progress=False).network(2)
    tuned, facts = retrain.finetune(small, X, T, X, T, loss=s.loss, epochs=3, lr=0.05, int8=True)
    assert facts["int8_requantized"]
    for m in _weighted(tuned):
        assert torch.equal(m.weight, per_channel_int8(m.weight))


@pytest.mark.parametrize("refit", REFITS, ids=[f"refit_{r}" for r in REFITS])
def test_int8_cnn_run_rebuilds_from_json_and_resumes_exactly(refit):
    import json

    from shrinknet.choose import checkpoint

    s = SETTINGS[3]
    model, _, X, T = build(s, n=30)
    model, X, T = model.float(), X.float(), T.float()
    model.shrinknet_input_shape = tuple(X.shape[1:])  # the run's layout names the input shape
    kw = dict(loss=s.loss, dtype="int8", refit=refit, max_fraction=0.5, progress=False)
    want = shrinknet.prune(model, X, T, **kw)
    k = len(want.steps) - 1
    back = shrinknet.PruneResult.from_json(want.to_json(), model=model, X_calib=X if refit else None)
    assert all(torch.equal(a, b) for a, b in zip(back.network(k).parameters(), want.network(k).parameters()))
    saved = []
    shrinknet.prune(model, X, T, checkpoint=lambda state, final=False: saved.append(
        checkpoint.decode(json.loads(checkpoint.dumps(state.to_dict())))), **kw)
    got = shrinknet.prune(model, X, T, resume=saved[len(saved) // 2], **kw)
    assert got.steps == want.steps
    assert all(torch.equal(a, b) for a, b in zip(got.network(k).parameters(), want.network(k).parameters()))
