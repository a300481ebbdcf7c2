"""The fast forms of the CNN's brute force (issue #18, Speed) against their slow, obviously correct twins:

- every chunk size (candidates per batched pass) and every block of instances gives the literal
  zero-each-unit-and-re-evaluate result (forward hooks on the plain torch model), and the same bits
  for 1 and 2 worker threads;
- ``perturbed`` (rank-1 and patch x kernel forms, channels-last) equals x minus the layer's own
  ``contribution``; ``patches`` equals ``F.unfold``; the tiling max pool of scratch mode equals torch's;
- the approximate speeds on CNNs: screening every unit is the exact run, and the agreement figures
  equal a literal exact evaluation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import shrinknet
from shrinknet.model import losses, network
from shrinknet.model.layers import net as seqnet
from shrinknet.model.layers.conv import Conv
from shrinknet.model.layers.pool import MaxPool
from shrinknet.choose import speed

import cnn_helpers
import test_families as fam
from test_cnn_threads import _masks, literal_brute_force

# one plain CNN and one depthwise-separable CNN per row of the grid below, both float64
CNNS = [cnn_helpers.SETTINGS[i] for i in (0, 1, 2, 3, 6, 11)]
DSCNNS = [fam.SETTINGS[i] for i in (0, 1, 4, 7, 9)]
NETS = [("cnn", s) for s in CNNS] + [("dscnn", s) for s in DSCNNS]
NET_IDS = [f"{kind}-{s.id}" for kind, s in NETS]


def _case(kind, s, n=11):
    """(model, net, loss, data, masks, literal scores) with about a third of every layer switched off."""
    if kind == "cnn":
        model, units, X, T = cnn_helpers.build(s, n=n)
    else:
        model, units, _, X, T = fam.build(s, n=n)
    net = shrinknet.as_net(model)
    loss = losses.get(s.loss)
    data = network.prepare(net, X, T, loss)
    masks = _masks(net.hidden_sizes, seed=3)
    return model, net, loss, data, masks, literal_brute_force(model, units, X, T, s.loss, masks)


# (chunk_size, instances per block): None is the network's own choice (one block of all 11
# instances at these sizes); blocks of 1 and 4 instances are forced
GRID = [(None, None), (1, 1), (2, 4), (3, None), (7, 1), (None, 4), (64, None)]
GRID_IDS = [f"chunk{c or 'auto'}-block{b or 'auto'}" for c, b in GRID]


@pytest.mark.parametrize("chunk,block", GRID, ids=GRID_IDS)
@pytest.mark.parametrize("kind,s", NETS, ids=NET_IDS)
def test_every_chunk_and_block_size_equals_zeroing_each_unit(kind, s, chunk, block, monkeypatch):
    model, net, loss, data, masks, want = _case(kind, s)
    if block is not None:  # blocks of ``block`` instances, whatever the cache size says
        auto = seqnet.SeqNet._auto_chunk
        monkeypatch.setattr(seqnet.SeqNet, "_auto_chunk",
                            lambda self, h, n, itemsize, k, c=None: (auto(self, h, n, itemsize, k, c)[0], min(block, n)))
    with torch.no_grad():
        trace = net.forward(data.X, masks)
        got = {w: net.brute_force(loss, data, masks, trace, chunk_size=chunk, workers=w) for w in (1, 2)}
    for a, b in zip(got[1], got[2]):
        assert torch.equal(a, b)  # chunks and blocks never depend on the worker count
    for g, ref, m in zip(got[1], want, masks):
        assert_close(g, ref, rtol=1e-10, atol=1e-12)
        assert bool((g[~m] == 0).all())


def test_auto_chunk_fills_instances_first_and_never_reads_the_worker_count(monkeypatch):
    model, net, loss, data, masks, _ = _case("cnn", CNNS[0], n=50)
    shapes = net.map_shapes()
    width = max(int(torch.tensor(sh).prod()) for blk in shapes[1:] for sh in blk)
    monkeypatch.setattr(seqnet, "l2_bytes", lambda: 8 * width * 20)
    monkeypatch.setattr(seqnet, "BLOCK_L2", 1.0)
    assert net._auto_chunk(0, 50, 8, 16) == (1, 20)  # 20 pairs: 20 instances of one candidate
    assert net._auto_chunk(0, 10, 8, 16) == (2, 10)  # all 10 instances, then 2 candidates
    assert net._auto_chunk(0, 5, 8, 16) == (2, 5)  # at most 16 / MIN_CHUNKS candidates per chunk
    assert net._auto_chunk(0, 50, 8, 16, chunk_size=4) == (4, 5)


CONVS = [((1, 1), (1, 1), (0, 0), (1, 1)), ((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (2, 1), (0, 1), (1, 1)),
         ((2, 2), (1, 2), (1, 0), (2, 1)), ((1, 3), (1, 2), (0, 2), (1, 2)), ((1, 1), (2, 2), (0, 0), (1, 1))]


@pytest.mark.parametrize("kernel,stride,padding,dilation", CONVS, ids=[f"k{c[0]}s{c[1]}p{c[2]}d{c[3]}" for c in CONVS])
def test_perturbed_equals_x_minus_the_contribution_and_patches_equal_unfold(kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    conv = Conv(torch.randn(5, 4, *kernel, generator=g, dtype=torch.float64),
                torch.randn(5, generator=g, dtype=torch.float64), stride, padding, dilation)
    o = torch.randn(3, 4, 7, 6, generator=g, dtype=torch.float64)
    x = conv.forward(o)
    J = torch.tensor([2, 0, 3])
    got = seqnet.perturbed(conv, seqnet.channels_last(x), o, J)
    assert_close(got, x.unsqueeze(0) - conv.contribution(o, J), rtol=1e-13, atol=1e-13)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    cols = seqnet.patches(o.transpose(0, 1), kernel, stride, padding, dilation, x.shape[2:])  # (C, N, H', W', k)
    ref = F.unfold(o, kernel, dilation, padding, stride).view(3, 4, -1, x.shape[2] * x.shape[3])  # (N, C, k, P)
    assert torch.equal(cols.reshape(4, 3, -1, cols.shape[-1]).permute(1, 0, 3, 2), ref)


@pytest.mark.parametrize("kernel,shape", [((2, 2), (3, 4, 9, 8)), ((1, 2), (2, 3, 1, 11)), ((3, 2), (2, 2, 7, 7)),
                                          ((1, 1), (2, 2, 3, 3))], ids=["2x2", "1d", "3x2-ragged", "1x1"])
def test_tiling_max_pool_in_scratch_mode_equals_torch(kernel, shape):
    g = torch.Generator().manual_seed(1)
    u = torch.randn(*shape, generator=g)
    u[0, 0, 0, 0] = float("nan")  # propagated by both
    pool = MaxPool(kernel, kernel, (0, 0), (1, 1))
    want = F.max_pool2d(u, kernel, kernel)
    assert torch.equal(pool.forward(u.clone(), inplace=True).nan_to_num(7.0), want.nan_to_num(7.0))
    cl = u.contiguous(memory_format=torch.channels_last)
    assert torch.equal(pool.forward(cl, inplace=True).nan_to_num(7.0), want.nan_to_num(7.0))


# -- approximate speeds on CNNs ----------------------------------------------------------------------
SPEED_NETS = [("cnn", CNNS[1]), ("cnn", CNNS[4]), ("dscnn", DSCNNS[0]), ("dscnn", DSCNNS[3])]
SPEED_IDS = [f"{kind}-{s.id}" for kind, s in SPEED_NETS]


def _model(kind, s, n=13):
    if kind == "cnn":
        model, units, X, T = cnn_helpers.build(s, n=n)
    else:
        model, units, _, X, T = fam.build(s, n=n)
    return model, units, X, T


@pytest.mark.parametrize("kind,s", SPEED_NETS, ids=SPEED_IDS)
def test_screening_every_unit_is_the_exact_run(kind, s):
    model, _, X, T = _model(kind, s)
    ex = shrinknet.prune(model, X, T, loss=s.loss, config=shrinknet.PruneConfig(progress=False, start_check="skip"))
    sc = shrinknet.prune(model, X, T, loss=s.loss, config=shrinknet.PruneConfig(
        progress=False, start_check="skip", speed="screen", screen_size=sum(ex.layout["hidden"])))
    assert [st.removed for st in sc.steps] == [st.removed for st in ex.steps]
    assert [st.error for st in sc.steps] == pytest.approx([st.error for st in ex.steps], rel=1e-12)
    assert all(a["same"] for a in sc.agreement) and len(sc.agreement) > 0


@pytest.mark.parametrize("how", ["screen", "fast"])
@pytest.mark.parametrize("kind,s", SPEED_NETS[::2], ids=SPEED_IDS[::2])
def test_cnn_agreement_figures_match_a_literal_exact_evaluation(kind, s, how):
    model, units, X, T = _model(kind, s)
    r = shrinknet.prune(model, X, T, loss=s.loss, config=shrinknet.PruneConfig(
        progress=False, start_check="skip", speed=how, screen_size=1, checks=100,
        block_fraction=0.5 if how == "fast" else None))
    limit = sum(r.layout["hidden"]) - len(r.layout["hidden"])
    assert [a["n_removed"] for a in r.agreement] == list(range(limit))  # every removal checked
    for a in r.agreement:
        k = a["n_removed"]
        masks = r.masks(k)
        literal = literal_brute_force(model, units, X, T, s.loss, masks)
        best = min(float(v) for h, sc in enumerate(literal) if int(masks[h].sum()) > 1
                   for j, v in enumerate(sc.tolist()) if masks[h][j])
        assert tuple(a["chosen"]) == tuple(r.steps[k + 1].removed[0])
        assert a["chosen_delta"] == pytest.approx(float(literal[a["chosen"][0]][a["chosen"][1]]), rel=1e-9, abs=1e-12)
        assert a["best_delta"] == pytest.approx(best, rel=1e-9, abs=1e-12)
    summ = speed.summary(r.agreement)
    assert summ["checks"] == limit and 0 <= summ["same"] <= limit and summ["max_excess_delta"] >= 0


@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 1, 7), (2, 5, 1, 1)], ids=["2d", "1d", "1x1"])
def test_linear_reads_a_channels_last_map_as_torch_flattens_it(shape):
    g = torch.Generator().manual_seed(2)
    N, C, H, W = shape
    from shrinknet.model.layers.linear import Dense

    dense = Dense(torch.randn(6, C * H * W, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64),
                  block=H * W)
    h = torch.randn(*shape, generator=g, dtype=torch.float64)
    want = F.linear(torch.flatten(h, 1), dense.weight, dense.bias)
    assert_close(dense.forward(h.contiguous(memory_format=torch.channels_last)), want, rtol=1e-13, atol=1e-13)
    assert torch.equal(dense.forward(h), want)
