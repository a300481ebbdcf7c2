"""PruneConfig (issue #15): one checked configuration; prune() keeps 0.3's keywords through a shim."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

import shrinknet
from shrinknet import PruneConfig
from shrinknet.choose import config as config_mod


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(30, 5, generator=g), torch.randint(0, 3, (30,), generator=g)


def test_prune_takes_at_most_twelve_parameters():
    assert len(inspect.signature(shrinknet.prune).parameters) <= 12


# (legacy keywords of 0.3, the same as a config)
SETTINGS = [
    pytest.param(dict(dtype="int8", max_fraction=0.5), id="int8-fraction"),
    pytest.param(dict(refit="final", ridge=1e-2, max_fraction=0.6), id="refit"),
    pytest.param(dict(clip="median", seed=3, batch_size=7, chunk_size=2), id="clip-batches"),
    pytest.param(dict(max_drop="2%", full_curve=True, dtype="float16"), id="drop-curve"),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_legacy_keywords_give_the_same_run_as_a_config(settings):
    model, X, T = tiny()
    new = shrinknet.prune(model, X, T, loss="cross_entropy", config=PruneConfig(progress=False, **settings))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = shrinknet.prune(model, X, T, loss="cross_entropy", progress=False, **settings)
    assert old.to_dict() == new.to_dict()


def test_each_legacy_keyword_warns_once(monkeypatch):
    monkeypatch.setattr(config_mod, "_warned", set())
    model, X, T = tiny()
    with pytest.warns(FutureWarning) as got:
        shrinknet.prune(model, X, T, loss="cross_entropy", progress=False, max_fraction=0.2)
    assert sorted(str(w.message) for w in got if w.category is FutureWarning) == [
        f"prune({k}=...) is deprecated and will be removed after shrinknet 0.4: pass config=shrinknet.PruneConfig({k}=...)"
        for k in ("max_fraction", "progress")]
    assert {w.filename for w in got} == {__file__}  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the second call is silent (about keywords)
        shrinknet.prune(model, X, T, loss="cross_entropy", progress=False, max_fraction=0.2)


def test_a_legacy_keyword_overrides_the_config_it_is_given_with():
    model, X, T = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        r = shrinknet.prune(model, X, T, loss="cross_entropy", config=PruneConfig(progress=False, max_fraction=0.9),
                            max_fraction=0.2)
    assert r.config["max_fraction"] == 0.2


def test_an_unknown_keyword_is_a_type_error():
    model, X, T = tiny()
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_frac'"):
        shrinknet.prune(model, X, T, max_frac=0.2)
    with pytest.raises(TypeError, match="must be a shrinknet.PruneConfig"):
        shrinknet.prune(model, X, T, config={"dtype": "int8"})


# every value is checked when the config is made, with prune()'s one-line messages
BAD = [
    (dict(dtype="int4"), "int4"),
    (dict(max_fraction=1.5), "max_fraction must be between 0 and 1"),
    (dict(max_drop="lots"), "cannot read max_drop"),
    (dict(max_drop=-1), "max_drop must be a finite number >= 0"),
    (dict(clip="max"), "unknown clip"),
    (dict(pairs=0), "pairs must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(chunk_size=True), "chunk_size must be a positive integer"),
    (dict(refit="sometimes"), "unknown refit"),
    (dict(ridge=float("nan")), "ridge must be a finite number"),
    (dict(ridge=-1.0), "ridge must be a finite number"),
]


@pytest.mark.parametrize("settings, message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_bad_values_are_refused_when_the_config_is_made(settings, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**settings)


# settings that only some criteria/algorithms allow: checked once, against the call
COMBOS = [
    ("taylor1", "iterative", dict(speed="screen"), "applies to method 'brute_force'"),
    ("brute_force", "iterative", dict(speed="fast", clip="mean"), "clip applies to speed 'exact' only"),
    ("brute_force", "iterative", dict(speed="fast", dtype="int8"), "scores the plain network"),
    ("brute_force", "iterative_pairs", dict(refit="every_step"), "scores pairs by switch-off"),
    ("brute_force", "iterative", dict(screen_size=4), "need speed='screen' or 'fast'"),
]


@pytest.mark.parametrize("method, algorithm, settings, message", COMBOS, ids=[c[3].split()[0] for c in COMBOS])
def test_combinations_are_checked_against_the_call(method, algorithm, settings, message):
    model, X, T = tiny()
    with pytest.raises(ValueError, match=message):
        shrinknet.prune(model, X, T, method=method, algorithm=algorithm, loss="cross_entropy",
                        config=PruneConfig(progress=False, **settings))


def test_the_config_stores_the_canonical_dtype():
    assert PruneConfig(dtype=torch.float16).dtype == "float16"


# -- the start check in the API (issue #17): warn by default, refuse with start_check="refuse" ------
def cross_entropy_model():
    """A 2-class MLP trained with cross-entropy: its outputs are logits, far from 0/1 targets."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def test_the_default_loss_on_a_cross_entropy_model_warns_with_the_fix():
    model, X, y = cross_entropy_model()
    with pytest.warns(shrinknet.StartCheckWarning, match="look like logits.*use loss cross_entropy") as got:
        shrinknet.prune(model, X, y, config=PruneConfig(progress=False, max_fraction=0.1))
    assert got[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right loss: no warning
        shrinknet.prune(model, X, y, loss="cross_entropy", config=PruneConfig(progress=False, max_fraction=0.1))


@pytest.mark.parametrize("how", ["refuse", "skip"])
def test_start_check_refuses_or_skips_as_configured(how):
    model, X, y = cross_entropy_model()
    cfg = PruneConfig(progress=False, max_fraction=0.1, start_check=how)
    if how == "refuse":
        with pytest.raises(shrinknet.StartCheckError, match="look like logits"):
            shrinknet.prune(model, X, y, config=cfg)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            shrinknet.prune(model, X, y, config=cfg)


def test_a_network_at_chance_warns():
    model, X, T = tiny()
    with pytest.warns(shrinknet.StartCheckWarning, match="at chance"):
        shrinknet.prune(model, X, T, loss="cross_entropy", config=PruneConfig(progress=False, max_fraction=0.1))
