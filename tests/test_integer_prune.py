"""``PruneConfig(dtype="int8", integer_only=True)`` (issue #16): the full-integer network in the loop.

Every recorded step equals its slow twin -- the step's network cut out of the original float model
(``surgery.shrink``), quantized literally (``quantize_network``) on the same calibration inputs and
run by the integer reference on the int8 inputs -- and its bytes are ``integer_bytes`` of that
network; brute force's first choice is the literal argmin of "remove, quantize, evaluate" over every
unit; the kept step fits the budget. Bad settings and data are refused in one line.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shrinknet import PruneConfig
from shrinknet.choose.prune import prune
from shrinknet.errors import InputError
from shrinknet.model import losses
from shrinknet.model.parse import as_net
from shrinknet.model.surgery import shrink
from shrinknet.store.integer import integer_bytes, quantize_network
from shrinknet.store.quantize import fake_quantize

NETS = {
    "mlp-relu": (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)), (6,)),
    "mlp-sigmoid-tanh": (lambda: nn.Sequential(nn.Linear(6, 7), nn.Sigmoid(), nn.Linear(7, 5), nn.Tanh(),
                                               nn.Linear(5, 3)), (6,)),
    "cnn-maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(4 * 3 * 3, 3)), (1, 8, 8)),
    # depthwise-separable: a removed depthwise channel outputs the constant relu6(bias), folded into the next bias
    "ds-cnn": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6(),
                                     nn.Conv2d(4, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(5, 3)), (1, 8, 8)),
}


def setup(name: str, n: int = 90):
    make, shape = NETS[name]
    torch.manual_seed(0)
    model = make()
    g = torch.Generator().manual_seed(1)
    X, Xc, Xt = (torch.randn(m, *shape, generator=g) for m in (n, 2 * n, n // 2))
    with torch.no_grad():  # labels the network itself nearly gets right: the start is well above chance
        T, Tt = (model(x).argmax(1) for x in (X, Xt))
        T[::7] = (T[::7] + 1) % 3
    return model, X, T, Xc, Xt, Tt


def literal(model, masks, Xc, X, T):
    """(error, accuracy, bytes) of the step's integer network, computed the slow way: cut, the weights stored
    at int8 (what the run's network holds, so its activations are calibrated as shipped), quantized, run."""
    net = as_net(model)
    net.bind(tuple(X.shape[1:]))  # a depthwise block's fold into the next bias needs the map shapes
    small = shrink(net, masks)
    with torch.no_grad():
        for m in small:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(fake_quantize(m.weight))
    inet = quantize_network(small, Xc, input_shape=X.shape[1:])
    q = inet.quantize_input(X)
    y = inet.dequantize_output(inet.forward(q))
    T1 = torch.nn.functional.one_hot(T, y.shape[1]).double()
    err = float(losses.get("cross_entropy").per_instance(y, T1).sum())
    acc = float((inet.forward(q).to(torch.int64).argmax(1) == T).double().mean())
    return err, acc, integer_bytes(small), inet.flash_bytes()


@pytest.mark.parametrize("method", ["brute_force", "taylor1"])
@pytest.mark.parametrize("name", list(NETS))
def test_every_recorded_step_is_the_integer_network(name, method):
    model, X, T, Xc, Xt, Tt = setup(name)
    cfg = PruneConfig(dtype="int8", integer_only=True, X_calib=Xc, progress=False, start_check="skip",
                      max_fraction=0.5)
    r = prune(model, X, T, method=method, loss="cross_entropy", config=cfg, X_test=Xt, T_test=Tt)
    assert r.config["integer_only"] is True and "X_calib" in r.config["integer_calibration"]
    assert len(r.steps) > 2
    for k, s in enumerate(r.steps):
        masks = r.masks(k)
        err, acc, nbytes, flash = literal(model, masks, Xc, X, T)
        assert s.error == pytest.approx(err, rel=1e-5) and s.accuracy == pytest.approx(acc, abs=1e-12)
        assert s.test_accuracy == pytest.approx(literal(model, masks, Xc, Xt, Tt)[1], abs=1e-12)
        assert s.bytes == nbytes == flash
        assert r.integer_network(k).flash_bytes() == s.bytes
        assert s.ram_bytes == r.integer_network(k).ram_bytes()  # int8 maps: the integer C's scratch
    if method == "brute_force":  # step 1: the literal argmin of remove-quantize-evaluate over every unit
        e0 = literal(model, r.masks(0), Xc, X, T)[0]
        deltas = {}
        for h, size in enumerate(r.layout["hidden"]):
            for j in range(size):
                masks = r.masks(0)
                masks[h][j] = False
                deltas[(h, j)] = literal(model, masks, Xc, X, T)[0] - e0
        best = min(deltas.values())
        assert deltas[tuple(r.steps[1].removed[0])] == pytest.approx(best, rel=1e-5, abs=1e-4)  # the run sums float32 losses
        assert r.steps[1].score == pytest.approx(best, rel=1e-5, abs=1e-4)  # the run sums float32 losses


@pytest.mark.parametrize("name", ["mlp-relu", "cnn-maxpool"])
def test_budget_counts_integer_bytes(name):
    model, X, T, Xc, *_ = setup(name)
    full = integer_bytes(model)
    budget = full - 40
    cfg = PruneConfig(dtype="int8", integer_only=True, X_calib=Xc, progress=False, start_check="skip")
    r = prune(model, X, T, loss="cross_entropy", budget_bytes=budget, config=cfg)
    k, small = r.fit(budget)
    assert r.steps[k].bytes == integer_bytes(small) <= budget < r.steps[0].bytes == full
    with pytest.raises(ValueError, match="full-integer"):
        prune(model, X, T, loss="cross_entropy", budget_bytes=10, config=cfg)
    ram = r.integer_network(0).ram_bytes() - 2  # the RAM budget counts int8 maps
    r = prune(model, X, T, loss="cross_entropy", ram_budget_bytes=ram, config=cfg)
    k, _ = r.fit(None, ram)
    assert r.integer_network(k).ram_bytes() == r.steps[k].ram_bytes <= ram < r.steps[0].ram_bytes


@pytest.mark.parametrize("case, fragment", [
    ("float32", "needs dtype='int8'"),
    ("pairs", "iterative_pairs"),
    ("nan", "NaN"),
    ("constant", "constant"),
    ("softplus", "softplus"),
    ("shape", "must have shape"),
])
def test_bad_settings_and_data_are_refused_in_one_line(case, fragment):
    model, X, T, Xc, *_ = setup("mlp-relu")
    kw = dict(dtype="int8", integer_only=True, X_calib=Xc, progress=False, start_check="skip", max_fraction=0.2)
    algorithm = "iterative"
    if case == "float32":
        kw["dtype"] = "float32"
    elif case == "pairs":
        algorithm = "iterative_pairs"
    elif case == "nan":
        kw["X_calib"] = Xc.clone()
        kw["X_calib"][5, 2] = math.nan
    elif case == "constant":
        kw["X_calib"] = torch.ones(20, 6)
    elif case == "softplus":
        model = nn.Sequential(model[0], nn.Softplus(), model[2], model[3], model[4])
    elif case == "shape":
        kw["X_calib"] = Xc[:, :4]
    with pytest.raises(ValueError) as e:
        prune(model, X, T, loss="cross_entropy", algorithm=algorithm, config=PruneConfig(**kw))
    assert fragment in str(e.value) and "\n" not in str(e.value)
    if case in ("nan", "constant", "softplus", "shape"):
        assert isinstance(e.value, InputError)
