"""Property-based fuzzing (hypothesis) of what shrinknet reads from files others made (issue #19):
the model-file description, the pruning checkpoint and the data readers. Every generated input
either loads and round-trips, or is refused with ``InputError``; nothing else (no other exception,
no crash) is allowed.

Inputs are genuine files with parts replaced: a JSON value anywhere in the document by any JSON
value (numbers of every kind, booleans, strings, lists, objects), or bytes of a data file changed,
cut or added. Profiles: ``ci`` (the default: a few seconds per property) and ``thorough`` (thousands
of examples; ``HYPOTHESIS_PROFILE=thorough pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import shrinknet
from shrinknet import prune
from shrinknet.choose import checkpoint
from shrinknet.data import readers
from shrinknet.errors import InputError
from shrinknet.repair import train
from shrinknet.ship import modelio

_COMMON = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large])
# CI gates merges, so its 40 examples a test are the same every run (derandomize); "thorough" explores anew
# each time (HYPOTHESIS_PROFILE=thorough): run it when the readers or schemas change
settings.register_profile("ci", max_examples=40, **{**_COMMON, "derandomize": True})
settings.register_profile("thorough", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: any JSON value Python's reader can give (NaN and infinities included, as it accepts them)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 2, -1, 0.5, 8.0, 10**30, True, "", "relu", "conv", "linear", "act", "maxpool"])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def paths(doc, prefix=()):
    """Every place in a JSON document: key paths to each value (the root included)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


def replaced(doc, path, value):
    """A deep copy of ``doc`` with the value at ``path`` replaced (or the whole document)."""
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    d = doc
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return doc


@st.composite
def mutations(draw, doc, values=JSON):
    """``doc`` with one to three values replaced by arbitrary JSON, or a key removed."""
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(doc))))
        if where and draw(st.booleans()) and isinstance(_at(doc, where[:-1]), dict):
            doc = json.loads(json.dumps(doc))
            _at(doc, where[:-1]).pop(where[-1])
        else:
            doc = replaced(doc, where, draw(values))
    return doc


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


# -- model-file descriptions ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzmodels")
    torch.manual_seed(0)
    meta = {"loss": "cross_entropy", "task": "classification", "class_values": [0, 1, "two"],
            "metrics": {"test_accuracy": 0.5}, "data": {"name": "x", "class_values": [0, 1, "two"]}}
    mlp = nn.Sequential(nn.Linear(4, 5), nn.Softplus(beta=2.0), nn.Linear(5, 3))
    cnn = shrinknet.as_net(train.cnn((1, 6, 6), 3, (2, 3), activation="leaky_relu", seed=0).eval()).to_sequential()
    out = {}
    for kind, model in (("mlp", mlp), ("cnn", cnn)):
        path = root / f"{kind}.safetensors"
        modelio.save_model(path, model, meta)
        with safe_open(str(path), "pt") as f:
            out[kind] = (json.loads(f.metadata()["shrinknet"]), {k: f.get_tensor(k) for k in f.keys()})
    return out


def _load_or_refuse(path: Path):
    try:
        return modelio.load_model(path)
    except InputError:
        return None


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@given(data=st.data())
def test_a_mutated_description_loads_and_round_trips_or_is_refused(model_docs, tmp_path, kind, data):
    doc, tensors = model_docs[kind]
    forged = data.draw(mutations(doc))
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"shrinknet": json.dumps(forged)})
    loaded = _load_or_refuse(path)
    if loaded is None:
        return
    model, meta = loaded
    again = tmp_path / "again.safetensors"
    modelio.save_model(again, model, meta)
    model2, meta2 = modelio.load_model(again)
    assert json.dumps(meta2, sort_keys=True) == json.dumps(meta, sort_keys=True)
    sd, sd2 = model.state_dict(), model2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    shape = meta.get("input_shape") or ([model[0].in_features] if isinstance(model[0], torch.nn.Linear) else None)
    if shape is None:  # a CNN description without in_shape loads (it is optional) but has no input to try
        return
    x = torch.randn(2, *shape)
    assert torch.equal(model(x), model2(x))


@pytest.mark.parametrize("key, value", [("beta", 10**33), ("beta", 3.402823466385289e+38), ("beta", 2.1e-55),
                                        ("threshold", 1e300), ("beta", 0)], ids=str)
def test_activation_parameters_that_overflow_float32_are_refused(model_docs, tmp_path, key, value):
    """What hypothesis once found: a softplus beta of 1e33 or 3.4e38 overflowed torch, one of 2e-55 made every
    output inf (so the file did not round-trip); such values are refused in one line."""
    doc, tensors = model_docs["mlp"]
    forged = json.loads(json.dumps(doc))
    forged["layers"][0]["activation"][key] = value
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"shrinknet": json.dumps(forged)})
    with pytest.raises(InputError, match=key):
        modelio.load_model(path)
    forged["layers"][0]["activation"][key] = {"beta": 2.0, "threshold": math.inf}[key]
    save_file(tensors, str(path), metadata={"shrinknet": json.dumps(forged)})
    assert modelio.load_model(path)[0] is not None  # sane values (+Infinity threshold too) still load


@given(doc=JSON)
def test_any_json_as_a_description_is_refused_in_one_line(model_docs, tmp_path, doc):
    """Nothing but a genuine description loads: any JSON value gets one line (or loads, if it happens
    to be one, which random values are not)."""
    _, tensors = model_docs["mlp"]
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"shrinknet": json.dumps(doc)})
    with pytest.raises(InputError) as e:
        modelio.load_model(path)
    assert "\n" not in str(e.value)


# -- checkpoints ----------------------------------------------------------------------------------
def _problem():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    X, T = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    return model, X, T


RUN = dict(method="brute_force", algorithm="iterative", loss="cross_entropy")


def _config(**kw):
    return shrinknet.PruneConfig(progress=False, batch_size=8, start_check="skip", **kw)


@pytest.fixture(scope="module")
def genuine_checkpoint():
    """The checkpoint after 3 of 5 removals, and the uninterrupted run's steps."""
    model, X, T = _problem()
    saved = []
    hook = lambda state, final=False: saved.append(json.loads(checkpoint.dumps(state.to_dict())))  # noqa: E731
    want = prune(model, X, T, **RUN, X_test=X[:8], T_test=T[:8], config=_config(checkpoint=hook))
    return saved[3], want.steps


@given(data=st.data())
def test_a_mutated_checkpoint_resumes_to_the_genuine_run_or_is_refused(genuine_checkpoint, tmp_path, data):
    doc, want = genuine_checkpoint
    forged = data.draw(mutations(doc))
    (tmp_path / "c.json").write_text(json.dumps(forged))
    try:
        saved = checkpoint.load(tmp_path / "c.json")
        model, X, T = _problem()
        got = prune(model, X, T, **RUN, X_test=X[:8], T_test=T[:8], config=_config(resume=saved))
    except InputError as e:
        assert "\n" not in str(e)
        return
    # accepted: every recorded number the replay recomputes is the genuine run's (the scores that chose
    # the removals are the run's own estimates, not recomputed)
    strip = lambda steps: [{**vars(s), "score": None} for s in steps]  # noqa: E731
    assert strip(got.steps) == strip(want)


# -- data readers ---------------------------------------------------------------------------------
def _npz_bytes(compressed: bool) -> bytes:
    g = np.random.default_rng(0)
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, X=g.normal(size=(12, 3)).astype(np.float32),
                                                      y=np.arange(12) % 3)
    return buf.getvalue()


def _idx_bytes(gz: bool) -> tuple[bytes, bytes]:
    images = b"\0\0\x08\x03" + struct.pack(">3I", 12, 2, 2) + bytes(range(48))
    labels = b"\0\0\x08\x01" + struct.pack(">I", 12) + bytes([0, 1, 2] * 4)
    return (gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)) if gz else (images, labels)


def _csv_bytes() -> bytes:
    return ("a,b,label\n" + "".join(f"{i * 0.5},{-i},{i % 3}\n" for i in range(12))).encode()


FILES = {  # id -> (file name, genuine bytes, labels file beside it or None)
    "npz": ("d.npz", _npz_bytes(False), None),
    "npz-deflated": ("d.npz", _npz_bytes(True), None),
    "idx": ("d-images-idx3-ubyte", *_idx_bytes(False)),
    "idx-gz": ("d-images-idx3-ubyte.gz", *_idx_bytes(True)),
    "csv": ("d.csv", _csv_bytes(), None),
    "csv-gz": ("d.csv.gz", gzip.compress(_csv_bytes(), mtime=0), None),
}


@st.composite
def byte_mutations(draw, data: bytes):
    """``data`` with a few bytes overwritten, a cut, or bytes inserted."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["overwrite", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if what == "overwrite" and data:
            data[at] = draw(st.integers(0, 255))
        elif what == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _read_or_refuse(path: Path):
    try:
        return readers._read_file(str(path), None)
    except InputError as e:
        assert "\n" not in str(e)
        return None


@pytest.mark.parametrize("kind", list(FILES))
@given(data=st.data())
def test_a_mutated_data_file_loads_and_round_trips_or_is_refused(tmp_path, kind, data):
    name, genuine, labels = FILES[kind]
    mutate_labels = labels is not None and data.draw(st.booleans())
    (tmp_path / name).write_bytes(genuine if mutate_labels else data.draw(byte_mutations(genuine)))
    if labels is not None:
        label_name = name.replace("images", "labels").replace("idx3", "idx1")
        (tmp_path / label_name).write_bytes(data.draw(byte_mutations(labels)) if mutate_labels else labels)
    raw = _read_or_refuse(tmp_path / name)
    if raw is None:
        return
    assert raw.X.dtype == np.float32 and raw.X.ndim == 2 and np.isfinite(raw.X).all()
    y = np.asarray(raw.class_values, dtype=object)[raw.y] if raw.class_values else raw.y
    if raw.class_values and all(isinstance(v, str) for v in raw.class_values):
        y = y.astype(str)
    elif raw.class_values:
        y = y.astype(np.float64 if any(isinstance(v, float) for v in raw.class_values) else np.int64)
    np.savez(tmp_path / "again.npz", X=raw.X, y=y)
    again = readers._read_file(str(tmp_path / "again.npz"), None)
    assert np.array_equal(again.X, raw.X) and np.array_equal(again.y, raw.y)
    assert list(again.class_values) == list(raw.class_values)
    assert all(not isinstance(v, bool) and (isinstance(v, str) or math.isfinite(v)) for v in raw.class_values)
