"""Attacks on what shrinknet writes (issue #19, families 1, 2 and part of 6), through the real CLI.

Every refusal: exit status 2, exactly one stderr line ``error: ...``, no traceback, and the
directory listing (with every file's bytes, files next to the output included) the same after as
before. Every accepted hostile string: the generated C compiles with ``-std=c99 -Wall -Wextra
-Werror`` and differs from a benign export only in banner comment lines of the expected shape.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shrinknet.cli import cli
from shrinknet.ship import modelio, names
from shrinknet.util import files

from helpers import train_blobs
from test_files import listing


def invoke(*args, **kw):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False, **kw)


def assert_refused(r, fragment: str = ""):
    """Exit 2, one stderr line starting ``error: `` (holding ``fragment``), no traceback."""
    err = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and fragment in err[0], r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-7-5-3 network trained through the CLI on blobs (tmp/m/model.safetensors)."""
    tmp = tmp_path_factory.mktemp("trained")
    return train_blobs(invoke, tmp, "m")


def hostile_model(tmp: Path, label: str) -> Path:
    """A small model file whose recorded class labels and data name hold ``label``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    meta = {"loss": "cross_entropy", "task": "classification", "class_values": [label, "b"],
            "data": {"name": label, "class_values": [label, "b"]}, "note": label}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "m.safetensors"
    modelio.save_model(path, net, meta)
    return path


# -- family 1: code injection ----------------------------------------------------------------------
def gcc():
    path = shutil.which("gcc") or shutil.which("cc")
    if path is None:
        pytest.skip("no C compiler on PATH: the generated C cannot be compiled")
    return path


def compile_c(path: Path):
    p = subprocess.run([gcc(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-c", path.name, "-o", path.stem + ".o"],
                       cwd=path.parent, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


_BANNER_LINE = re.compile(r" \* [\x20-\x7e]*\Z")


def assert_same_shape(got: str, benign: str):
    """``got`` equals the benign export line by line except banner lines ``" * ..."``, which must be
    printable ASCII holding no ``*/``, ``/*`` or ``??`` and not ending in a backslash."""
    g, b = got.splitlines(), benign.splitlines()
    assert len(g) == len(b), "the hostile text added or removed lines"
    for x, y in zip(g, b):
        if x == y:
            continue
        assert y.startswith(" * ") and _BANNER_LINE.match(x), (x, y)
        assert "*/" not in x and "/*" not in x and "??" not in x and not x.endswith("\\"), x


HOSTILE_LABELS = [  # (id, class label / data name / meta text)
    ("closes the comment", "x */ int evil(void) { return system(\"sh\"); } /*"),
    ("opens a nested comment", "a /* b"),
    ("star slash star", "*/*"),
    ("slash star slash", "/*/"),
    ("trigraph line splice", "x ??/"),
    ("newline then directive", "a\n#include </etc/passwd>\n"),
    ("backslash at the end", "tail\\"),
    ("bidi override (trojan source)", "\u202e} ;lave /*"),
    ("NUL and escape codes", "\x00\x1b[31mred\r"),
    ("non-ASCII", "été ✓ 😀"),
    ("C++ comment", "// line"),
]


@pytest.mark.parametrize("label", [c[1] for c in HOSTILE_LABELS], ids=[c[0] for c in HOSTILE_LABELS])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_hostile_labels_stay_in_their_comment_and_the_c_compiles(tmp_path, label, dtype):
    outs = {}
    for name, text in (("benign", "plain"), ("hostile", label)):
        model = hostile_model(tmp_path / name, text)
        out = tmp_path / name / "net.c"
        r = invoke("export", model, "--format", "c", "--dtype", dtype, "--out", out)
        assert r.exit_code == 0, r.output
        outs[name] = out
    for suffix in (".c", ".h"):
        assert_same_shape(outs["hostile"].with_suffix(suffix).read_text(), outs["benign"].with_suffix(suffix).read_text())
    compile_c(outs["hostile"])
    meta_line = [x for x in outs["hostile"].read_text().splitlines() if x.startswith(" * Meta:")]
    assert len(meta_line) == 1


def test_hostile_labels_in_onnx_are_one_line_and_read_back(tmp_path):
    onnx = pytest.importorskip("onnx")
    text = "".join(c[1] for c in HOSTILE_LABELS)
    model = hostile_model(tmp_path, text)
    r = invoke("export", model, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output
    m = onnx.load(tmp_path / "m.onnx")
    props = {p.key: p.value for p in m.metadata_props}
    value = props["shrinknet.meta"]
    assert value == names.one_line(value) and json.loads(value)["note"] == text  # escaped, and exact when read
    assert m.doc_string == names.one_line(m.doc_string)


BAD_HEADER_NAMES = [  # (id, --out file name): the .h name cannot stand in #include "..."
    ("quote and newlines inject code",
     'm".h"\n__attribute__((constructor)) static void evil(void) { system("id"); }\n#include "x.c'),
    ("backslash", "m\\x.c"),
    ("single quote", "m'x.c"),
    ("newline", "m\nx.c"),
    ("carriage return", "m\rx.c"),
    ("escape code", "m\x1b[2Jx.c"),
    ("non-ASCII", "modèle.c"),
    ("bidi override", "m\u202ex.c"),
    ("space", "my model.c"),
    ("comment opener", "m*x.c"),
]


@pytest.mark.parametrize("name", [c[1] for c in BAD_HEADER_NAMES], ids=[c[0] for c in BAD_HEADER_NAMES])
def test_a_file_name_that_cannot_be_included_safely_is_refused(trained, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    r = invoke("export", trained, "--format", "c", "--out", tmp_path / name)
    assert_refused(r, "#include")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("name", ["my-model+v2.c", "Model_1.c", "m.v2.c"])
def test_a_plain_file_name_is_included_and_compiles(trained, tmp_path, name):
    r = invoke("export", trained, "--format", "c", "--out", tmp_path / name)
    assert r.exit_code == 0, r.output
    header = Path(name).with_suffix(".h").name
    assert f'#include "{header}"' in (tmp_path / name).read_text().splitlines()
    compile_c(tmp_path / name)


BAD_PREFIXES = [  # (id, --prefix): the macros are the prefix in upper case, so only lower case is taken
    ("upper case (NET would share net's guard)", "NET"),
    ("mixed case", "Net"),
    ("leading underscore (reserved)", "_net"),
    ("digit first", "9lives"),
    ("injection", "net;system"),
    ("newline", "net\n#define x"),
    ("non-ASCII", "nét"),
    ("empty", ""),
]


@pytest.mark.parametrize("prefix", [c[1] for c in BAD_PREFIXES], ids=[c[0] for c in BAD_PREFIXES])
def test_a_prefix_that_is_not_a_lower_case_identifier_is_refused(trained, tmp_path, monkeypatch, prefix):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    r = invoke("export", trained, "--format", "c", "--prefix", prefix, "--out", tmp_path / "m.c")
    assert_refused(r, "not a C identifier")
    assert listing(tmp_path) == before


def test_distinct_prefixes_give_distinct_guards_and_macros_and_link_together(trained, tmp_path):
    prefixes = ["net", "net_", "n_et", "net2"]
    guards = set()
    for p in prefixes:
        r = invoke("export", trained, "--format", "c", "--prefix", p, "--out", tmp_path / f"{p}.c")
        assert r.exit_code == 0, r.output
        h = (tmp_path / f"{p}.h").read_text()
        guard = re.search(r"^#ifndef (\w+)$", h, re.M)[1]
        assert guard == f"{p.upper()}_H" and f"#define {p.upper()}_INPUT_SIZE " in h
        guards.add(guard)
        compile_c(tmp_path / f"{p}.c")
    assert len(guards) == len(prefixes)
    main = tmp_path / "main.c"  # all headers in one unit: a shared guard would hide a declaration
    main.write_text("".join(f'#include "{p}.h"\n' for p in prefixes)
                    + "int main(void) { float x[4] = {0}, y[3]; "
                    + " ".join(f"{p}_forward(x, y);" for p in prefixes) + " return (int)y[0]; }\n")
    compile_c(main)
    p = subprocess.run([gcc(), "main.o", *(f"{p}.o" for p in prefixes), "-lm", "-o", "main"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
