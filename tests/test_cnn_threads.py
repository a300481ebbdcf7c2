"""Worker threads for the CNN's exact brute force: the same bits for any worker count, equal to the
literal zero-each-channel-and-re-evaluate twin; a prune run the same step for step; the policy's
work count of a CNN against a hand count."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet.model import losses, network
from shrinknet.util import threads
from shrinknet.repair.train import cnn

from cnn_helpers import SETTINGS, build, ref_error

IDS = [s.id for s in SETTINGS]


def _masks(sizes, seed: int = 0):
    """Random masks removing about a third of every hidden layer's units (keeping at least one)."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for size in sizes:
        m = torch.rand(size, generator=g) > 0.35
        m[torch.randint(size, (1,), generator=g)] = True
        masks.append(m)
    return masks


def literal_brute_force(model, units, X, T, loss, masks):
    """The slow twin: every hidden layer's units gated by forward hooks on the plain torch model;
    for each kept unit, zero it too and evaluate the whole model again. Removed units: 0."""
    gates = [m.to(torch.float64) for m in masks]

    def error():
        def hook(g):
            return lambda _m, _inp, out: out * g.view(1, -1, *([1] * (out.ndim - 2)))

        handles = [model[u].register_forward_hook(hook(g)) for u, g in zip(units, gates)]
        try:
            return ref_error(model(X), T, loss)
        finally:
            for handle in handles:
                handle.remove()

    with torch.no_grad():
        E0 = error()
        out = []
        for h, m in enumerate(masks):
            s = torch.zeros(len(m), dtype=torch.float64)
            for c in m.nonzero().squeeze(1).tolist():
                gates[h][c] = 0
                s[c] = error() - E0
                gates[h][c] = 1
            out.append(s)
    return out


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_brute_force_same_bits_for_1_2_3_workers_and_equals_zeroing_each_channel(s):
    model, units, X, T = build(s, n=13)
    net = shrinknet.as_net(model)
    loss = losses.get(s.loss)
    data = network.prepare(net, X, T, loss)
    masks = _masks(net.hidden_sizes)
    want = literal_brute_force(model, units, X, T, s.loss, masks)
    with torch.no_grad():
        trace = net.forward(data.X, masks)
        for chunk_size in (1, 2, None):  # None: the network's own chunks (one per layer here)
            got = {w: net.brute_force(loss, data, masks, trace, chunk_size=chunk_size, workers=w) for w in (1, 2, 3)}
            for w in (2, 3):
                for a, b in zip(got[1], got[w]):
                    assert torch.equal(a, b), (chunk_size, w)
            for g, ref in zip(got[1], want):
                assert_close(g, ref, rtol=1e-10, atol=1e-12)


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_every_kept_candidate_is_counted_once_by_the_workers():
    s = SETTINGS[0]
    model, _, X, T = build(s)
    net = shrinknet.as_net(model)
    loss = losses.get(s.loss)
    data = network.prepare(net, X, T, loss)
    masks = _masks(net.hidden_sizes, seed=1)
    bar = _Bar()
    with torch.no_grad():
        net.brute_force(loss, data, masks, net.forward(data.X, masks), chunk_size=1, bar=bar, workers=3)
    assert bar.n == sum(int(m.sum()) for m in masks)


@pytest.mark.parametrize("s", SETTINGS[::3], ids=IDS[::3])
def test_prune_with_two_workers_equals_one_step_for_step(s):
    model, _, X, T = build(s, n=13)
    runs = [shrinknet.prune(model, X, T, loss=s.loss, max_fraction=1.0, threads=w, chunk_size=1, progress=False)
            for w in (1, 2)]
    one, two = ([dataclasses.asdict(step) for step in r.steps] for r in runs)
    assert len(one) > 2 and one == two


def test_scoring_work_of_a_cnn_is_the_hand_count():
    """1x6x6 -> conv 3x3 pad 1 (2 ch) -> ReLU -> max pool 2 -> conv 2x2 (3 ch) -> ReLU -> Flatten ->
    Linear 12 -> 4 -> ReLU -> Linear 4 -> 2."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    net = shrinknet.as_net(model)
    net.bind((1, 6, 6))
    # per instance, the multiply-adds of each layer's forward: conv1 2*6*6 outputs x 1*3*3 = 648 (not on
    # any candidate's path), conv2 3*2*2 outputs x 2*2*2 = 96, Linear 12*4 = 48, Linear 4*2 = 8
    # a channel of conv1: its slice of conv2 (3 outputs * 2x2 kernel * 2x2 positions = 96 / 2), then both Linears
    c1 = 96 / 2 + 48 + 8
    # a channel of conv2: its block of 2*2 columns into 4 features (48 / 3), then the last Linear
    c2 = 4 * 2 * 2 + 8
    # a unit of the hidden Linear: its column into 2 outputs
    c3 = 2
    N = 5
    assert threads.candidate_work(net, 0, N) == N * c1
    assert threads.scoring_work(net, N) == N * (2 * c1 + 3 * c2 + 4 * c3) == 1440


def test_the_policy_gives_a_large_cnn_the_cores(monkeypatch):
    """The bench_cnn network over 1000 images is well above SMALL_WORK; a tiny one is below it."""
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    large = shrinknet.as_net(cnn((1, 20, 20), 10, (16, 32), "relu"))
    large.bind((1, 20, 20))
    assert threads.workers_for(threads.scoring_work(large, 1000)) == 4
    assert threads.workers_for(threads.scoring_work(large, 1000), threads=1) == 1
    model, _, X, _ = build(SETTINGS[0])
    tiny = shrinknet.as_net(model)
    tiny.bind(tuple(X.shape[1:]))
    assert 0 < threads.scoring_work(tiny, len(X)) < threads.SMALL_WORK
    assert threads.workers_for(threads.scoring_work(tiny, len(X))) == 1
