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


# -- family 2: files of the user's destroyed --------------------------------------------------------
def _user_dir(out: Path):
    out.mkdir()
    (out / "mine.txt").write_text("the user's")


def _user_file(out: Path):
    out.write_text("the user's")


def _user_replaces_dir(out: Path):
    shutil.rmtree(out)
    _user_dir(out)


def _user_adds_file(out: Path):
    (out / "mine.txt").write_text("the user's")


def _user_replaces_a_file(out: Path):
    (out / "model.safetensors").unlink()
    (out / "model.safetensors").write_text("the user's")


RACES = [  # (id, what --out is at the check, what the user does before the final step)
    ("absent, then a directory of the user's", "absent", _user_dir),
    ("absent, then a file of the user's", "absent", _user_file),
    ("empty, then a file put in it", "empty", _user_adds_file),
    ("a run (--overwrite), then a directory of the user's in its place", "run", _user_replaces_dir),
    ("a run (--overwrite), then a file added to it", "run", _user_adds_file),
    ("a run (--overwrite), then a file in it replaced", "run", _user_replaces_a_file),
]


@pytest.mark.parametrize("at_check, race", [c[1:] for c in RACES], ids=[c[0] for c in RACES])
def test_a_directory_changed_between_the_check_and_the_swap_is_kept(trained, tmp_path, monkeypatch, at_check, race):
    data = trained.parent.parent / "blobs.npz"
    out = tmp_path / "run"
    args = ["train", "--data", data, "--hidden", "3", "--epochs", "30", "--out", out]
    if at_check == "empty":
        out.mkdir()
    elif at_check == "run":
        assert invoke(*args).exit_code == 0
        args.append("--overwrite")
    monkeypatch.chdir(tmp_path)
    real_swap, seen = files._swap_in, {}

    def racing_swap(*a):
        race(out)  # the user, between shrinknet's check and its final step
        seen["listing"] = {k: v for k, v in listing(tmp_path).items() if not re.search(r"shrinknet-(lock|\d+-)", k)}
        return real_swap(*a)

    monkeypatch.setattr(files, "_swap_in", racing_swap)
    r = invoke(*args)
    assert_refused(r, "was changed by something else")
    assert listing(tmp_path) == seen["listing"]  # the user's files as they left them, nothing of shrinknet's


def test_the_fallback_without_renameat2_refuses_alike(tmp_path, monkeypatch):
    """Where renameat2 is missing: link-based moves for files, exclusive mkdir + rename for directories."""
    monkeypatch.setattr(files, "_renameat2", [None])
    for kind in ("file", "dir"):
        src, dst = tmp_path / f"src-{kind}", tmp_path / f"dst-{kind}"
        if kind == "file":
            src.write_text("new")
        else:
            src.mkdir()
            (src / "new.txt").write_text("new")
        _user_dir(dst)
        before = listing(tmp_path)
        with pytest.raises(FileExistsError):
            files.rename_noreplace(src, dst)
        assert listing(tmp_path) == before
        shutil.rmtree(dst)
        files.rename_noreplace(src, dst)
        assert not src.exists() and dst.exists()


def _unrelated(name, text="the user's"):
    return lambda t: (t / name).write_text(text)


def _exported(fmt, name):
    def setup(t):
        r = invoke("export", t / "m" / "model.safetensors", "--format", fmt, "--out", t / name)
        assert r.exit_code == 0, r.output
    return setup


def _checkpoint(t):
    (t / "run.checkpoint.json").write_text('{"removed": [[0, 1]]}')


def _state_dict(t):
    from safetensors.torch import save_file

    save_file({"0.weight": torch.zeros(2, 2)}, str(t / "sd.safetensors"))


EXPORT_ATTACKS = [  # (id, setup(tmp), export arguments, fragment of the one error line)
    ("onnx over an interrupted run's checkpoint", _checkpoint,
     ["--format", "onnx", "--out", "run.checkpoint.json"], "give a name ending in .onnx"),
    ("onnx over it with --overwrite", _checkpoint,
     ["--format", "onnx", "--out", "run.checkpoint.json", "--overwrite"], "give a name ending in .onnx"),
    ("c next to an unrelated notes.h", _unrelated("notes.h"), ["--format", "c", "--out", "notes.c"],
     "notes.h exists and was not written by shrinknet"),
    ("c next to an unrelated notes.h, --overwrite", _unrelated("notes.h"),
     ["--format", "c", "--out", "notes.c", "--overwrite"], "notes.h exists and was not written by shrinknet"),
    ("c over an unrelated notes.c", _unrelated("notes.c"), ["--format", "c", "--out", "notes.c", "--overwrite"],
     "notes.c exists and was not written by shrinknet"),
    ("c over a C file that only mentions shrinknet", _unrelated("x.c", "/* shrinknet */\n"),
     ["--format", "c", "--out", "x.c", "--overwrite"], "not written by shrinknet"),
    ("safetensors over a data file", _unrelated("data.npz"), ["--format", "safetensors", "--out", "data.npz"],
     "give a name ending in .safetensors"),
    ("safetensors over a plain state_dict", _state_dict,
     ["--format", "safetensors", "--out", "sd.safetensors", "--overwrite"], "not written by shrinknet"),
    ("onnx over an unrelated .onnx", _unrelated("x.onnx"), ["--format", "onnx", "--out", "x.onnx", "--overwrite"],
     "not written by shrinknet"),
    ("c to a .h name", None, ["--format", "c", "--out", "m.h"], "give a name ending in .c"),
    ("onnx to a .c name", None, ["--format", "onnx", "--out", "m.c"], "give a name ending in .onnx"),
    ("own onnx export without --overwrite", _exported("onnx", "e.onnx"), ["--format", "onnx", "--out", "e.onnx"],
     "add --overwrite"),
    ("own C pair without --overwrite", _exported("c", "e.c"), ["--format", "c", "--out", "e.c"], "add --overwrite"),
    ("own .c, the user's .h, --overwrite", lambda t: [_exported("c", "e.c")(t), _unrelated("e.h")(t)],
     ["--format", "c", "--out", "e.c", "--overwrite"], "e.h exists and was not written by shrinknet"),
    ("own safetensors without --overwrite", _exported("safetensors", "e.safetensors"),
     ["--format", "safetensors", "--out", "e.safetensors"], "add --overwrite"),
    ("a newline in --out", None, ["--format", "onnx", "--out", "a\nb.txt"], "a\\nb.txt"),
]


@pytest.fixture
def workdir(trained, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    shutil.copy(trained, tmp_path / "m" / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("setup, args, fragment", [c[1:] for c in EXPORT_ATTACKS], ids=[c[0] for c in EXPORT_ATTACKS])
def test_export_never_replaces_a_file_it_may_not(workdir, setup, args, fragment):
    if setup is not None:
        setup(workdir)
    before = listing(workdir)
    r = invoke("export", workdir / "m" / "model.safetensors", *args)
    assert_refused(r, fragment)
    assert listing(workdir) == before


@pytest.mark.parametrize("fmt, name", [("onnx", "e.onnx"), ("c", "e.c"), ("safetensors", "e.safetensors")])
def test_export_with_overwrite_replaces_its_own_export(workdir, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    _exported(fmt, name)(workdir)
    first = listing(workdir)
    r = invoke("export", workdir / "m" / "model.safetensors", "--format", fmt, "--dtype", "float16", "--out", name,
               "--overwrite")
    assert r.exit_code == 0, r.output
    after = listing(workdir)
    assert sorted(after) == sorted(first)  # the same files (C: both halves), nothing left beside them
    assert after[name] != first[name]


def test_a_file_put_beside_the_export_while_it_runs_is_kept(workdir, monkeypatch):
    from shrinknet.ship import export as ship_export

    real = ship_export.replace_files

    def racing(pairs, expect=None):
        (workdir / "notes.h").write_text("the user's")  # after the check, before the write
        return real(pairs, expect)

    monkeypatch.setattr(ship_export, "replace_files", racing)
    before = {**listing(workdir), "notes.h": b"the user's"}
    r = invoke("export", workdir / "m" / "model.safetensors", "--format", "c", "--out", "notes.c")
    assert_refused(r, "was changed by something else")
    assert listing(workdir) == before


# -- family 6: distributed failures name their rank ----------------------------------------------
RANK_WRAPPER = """
import os, sys, time
from shrinknet.cli import main
from shrinknet.util import distributed
how, argv = sys.argv[1], sys.argv[2:]
if int(os.environ["RANK"]) == 1:
    if how == "bad budget":
        argv[argv.index("--budget") + 1] = "-5KiB"
    elif how == "missing data":
        argv[argv.index("--data") + 1] = "missing.npz"
    elif how == "stall":  # never reaches the first collective
        distributed.check_same = lambda *a: time.sleep(3600)
main(argv)
"""

RANK_FAILURES = [  # (id, what rank 1 does, fragment of rank 0's one error line)
    ("rank 1 refuses its budget", "bad budget", "distributed rank 1 of 2 stopped: "),
    ("rank 1 cannot read its data", "missing data", "distributed rank 1 of 2 stopped: "),
    ("rank 1 stalls", "stall", "distributed rank 1 of 2 did not answer within 8 s"),
]


@pytest.mark.parametrize("how, fragment", [c[1:] for c in RANK_FAILURES], ids=[c[0] for c in RANK_FAILURES])
def test_a_failing_or_stalled_rank_is_named_by_rank_0(trained, tmp_path, how, fragment):
    import socket

    shutil.copy(trained, tmp_path / "m.safetensors")
    shutil.copy(trained.parent.parent / "blobs.npz", tmp_path / "d.npz")
    (tmp_path / "w.py").write_text(RANK_WRAPPER)
    before = listing(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SHRINKNET_DIST_TIMEOUT": "8",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{port}", "w.py", how, "prune", "m.safetensors", "--data", "d.npz",
           "--budget", "300B", "--no-analyze", "--out", "run"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert p.returncode != 0
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], p.stderr[-3000:]
    assert "internal error" not in p.stderr and "Traceback (most recent call last)" not in p.stderr.split("error:")[0]
    assert re.search(r"exitcode\s*:\s*2", p.stderr), p.stderr[-3000:]  # rank 0's status, as torchrun reports it
    assert listing(tmp_path) == before  # no run, no checkpoint, no lock left behind


# -- family 6: report on a name with $, train at chance, misleading messages ----------------------------
def test_report_draws_a_run_name_with_dollars_as_text(trained, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "4k_vs_$5$_<b>&'"
    r = invoke("prune", trained, "--budget", "300B", "--no-analyze", "--checkpoint-every", "0", "--out", run)
    assert r.exit_code == 0, r.output
    twin = tmp_path / "8k_vs_$6$"  # two runs of one name: the labels hold their directories' names
    shutil.copytree(run, twin)
    r = invoke("report", run, twin, "--out", tmp_path / "rep", "--title", "cost $x$ <script>")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "4k_vs_$5$_&lt;b&gt;&amp;&#x27;" in page and "8k_vs_$6$" in page
    assert "cost $x$ &lt;script&gt;" in page and "<script>" not in page and "<b>&" not in page
    from shrinknet.ship.report import draw

    assert all(draw._RC[k] == v for k, v in names.FIGURE_RC.items())  # every figure is drawn under it


def _huge_inputs(t):
    import numpy as np

    g = np.random.default_rng(0)
    y = g.integers(0, 3, 300)
    X = (g.normal(size=(300, 4)) + np.eye(3, 4)[y] * 2.5).astype(np.float32)
    X[:, 0] = 3e38
    np.savez(t / "huge.npz", X=X, y=y)


MESSAGES = [  # (id, setup(tmp) or None, argv, fragment of the one error line)
    ("train on inputs of 3e38 ends at chance", _huge_inputs,
     ["train", "--data", "huge.npz", "--hidden", "7,5", "--epochs", "20", "--out", "run"], "3e+38"),
    ("--seed -1 without --data: no warning first", None,
     ["prune", "m/model.safetensors", "--seed", "-1", "--budget", "300B", "--out", "run"], "'--seed': -1"),
    ("--hidden 10,,10", None, ["train", "--data", "m/model.safetensors", "--hidden", "10,,10", "--out", "run"],
     "'10,,10'"),
    ("a newline in --data", None, ["train", "--data", "no\nsuch.npz", "--out", "run"], "no\\nsuch.npz"),
    ("an escape code in --out", None, ["export", "m/model.safetensors", "--format", "c", "--out", "x\x1b[2J.h"],
     "x\\u001b[2J.h"),
]


@pytest.mark.parametrize("setup, argv, fragment", [c[1:] for c in MESSAGES], ids=[c[0] for c in MESSAGES])
def test_a_refusal_is_one_true_line(workdir, setup, argv, fragment):
    if setup is not None:
        setup(workdir)
    before = listing(workdir)
    r = invoke(*argv)
    assert_refused(r, fragment)
    assert listing(workdir) == before


def test_train_force_keeps_a_network_at_chance(workdir):
    _huge_inputs(workdir)
    r = invoke("train", "--data", "huge.npz", "--hidden", "7,5", "--epochs", "20", "--out", "run", "--force")
    assert r.exit_code == 0, r.output
    assert (workdir / "run" / "model.safetensors").exists()
