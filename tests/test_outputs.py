"""Outputs through the command line: checked before any work, never the input, written whole,
one writer at a time, the same bytes for the same seed, and runs that resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinknet.util import files
from shrinknet.ship import modelio
from shrinknet.cli import cli

from helpers import train_blobs
from test_files import dead_pid, listing

PRUNE = ["--budget", "300B", "--full-curve", "--export", "c", "--no-analyze", "--checkpoint-every", "0"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 4-7-5-3 network trained on well separated blobs (10 removable neurons)."""
    tmp = tmp_path_factory.mktemp("model")
    return train_blobs(invoke, tmp, "m")


def assert_same_run(got: Path, want: Path, why=""):
    """The same files with the same bytes; run.json may differ only in its wall-clock seconds."""
    assert sorted(os.listdir(got)) == sorted(os.listdir(want)), why
    for name in os.listdir(want):
        a, b = (got / name).read_bytes(), (want / name).read_bytes()
        if name == "run.json":
            a, b = json.loads(a), json.loads(b)
            assert a["extras"].pop("seconds") >= 0 and b["extras"].pop("seconds") >= 0
        assert a == b, (why, name)


@pytest.fixture(scope="module")
def uninterrupted(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    r = invoke("prune", model, *PRUNE, "--out", out)
    assert r.exit_code == 0, r.output
    return out


# -- bad output locations: one table, one test ----------------------------------------------------
def _fifo(p):
    os.mkfifo(p)
    return p


def _full(p):
    p.mkdir()
    (p / "mine.txt").write_text("the user's")
    return p


BAD_OUTPUTS = [  # (id, setup(tmp, model) -> argv, fragment of the message); run in tmp as the cwd
    ("out is the input's directory", lambda t, m: ["prune", m, "--out", m.parent, "--overwrite"], "contains the input"),
    ("out contains the input", lambda t, m: ["prune", m, "--out", t, "--overwrite"], "contains the input"),
    ("out links to the input's directory",
     lambda t, m: [os.symlink(m.parent, t / "link"), "prune", m, "--out", t / "link", "--overwrite"][1:], "the input"),
    ("out reaches the input by ..", lambda t, m: ["prune", m, "--out", t / "x" / ".." / "m", "--overwrite"], "the input"),
    ("relative out is the input's directory", lambda t, m: ["prune", "m/model.safetensors", "--out", "m/."], "the input"),
    ("export over the input model", lambda t, m: ["export", m, "--format", "safetensors", "--out", m], "is the input"),
    ("prune --val file inside out", lambda t, m: ["prune", m, "--budget", "300B", "--val", t / "o" / "v.npz", "--out",
                                                   [_full(t / "o"), (t / "o" / "v.npz").write_bytes(b"x")] and t / "o",
                                                   "--overwrite"], "contains the input"),
    ("train data inside out", lambda t, m: ["train", "--data", t / "blobs.npz", "--out", t, "--overwrite"], "the input"),
    ("report into a run it reads", lambda t, m: [_full(t / "r"), "report", t / "r", "--out", t / "r", "--overwrite"][1:],
     "is the input"),
    ("report inside a run it reads", lambda t, m: [_full(t / "r"), "report", t / "r", "--out", t / "r" / "rep"][1:],
     "inside the input directory"),
    ("existing non-empty out", lambda t, m: ["prune", m, "--out", _full(t / "full")], "--overwrite"),
    ("rank into non-empty out", lambda t, m: ["rank", m, "--out", _full(t / "full")], "--overwrite"),
    ("demo into a foreign directory", lambda t, m: ["demo", "--out", _full(t / "full")], "--overwrite"),
    ("out is a file", lambda t, m: [(t / "f.txt").write_text("x"), "prune", m, "--out", t / "f.txt"][1:], "is a file"),
    ("out is a FIFO", lambda t, m: ["prune", m, "--out", _fifo(t / "fifo")], "FIFO"),
    ("out is /dev/null", lambda t, m: ["prune", m, "--out", "/dev/null"], "device"),
    ("parent is a file", lambda t, m: [(t / "f.txt").write_text("x"), "train", "--data", "digits", "--out",
                                       t / "f.txt" / "sub"][1:], "not a directory"),
    ("reproduce into a FIFO", lambda t, m: ["reproduce", "4.3", "--quick", "--out", _fifo(t / "fifo")], "FIFO"),
    ("demo into a file", lambda t, m: [(t / "f.txt").write_text("x"), "demo", "--out", t / "f.txt"][1:], "is a file"),
    ("export to a directory", lambda t, m: ["export", m, "--format", "c", "--out", _full(t / "full")], "is a directory"),
    ("export to /dev/null", lambda t, m: ["export", m, "--format", "onnx", "--out", "/dev/null"], "device"),
    ("export .h is a FIFO", lambda t, m: [_fifo(t / "model.h"), "export", m, "--format", "c", "--out", t / "model.c"][1:],
     "FIFO"),
    ("checkpoint location is a directory",
     lambda t, m: [(t / "p.checkpoint.json").mkdir(), "prune", m, "--out", t / "p"][1:], "is a directory"),
    ("checkpoint left by an interrupted run",
     lambda t, m: [(t / "p.checkpoint.json").write_text("{}"), "prune", m, "--out", t / "p"][1:], "--resume"),
    ("--resume and --out differ", lambda t, m: ["prune", m, "--resume", t / "a", "--out", t / "b"], "different"),
    pytest.param("read-only file system", lambda t, m: ["train", "--data", "digits", "--out", "/proc/sys/shrinknet-out"],
                 "not writable", marks=pytest.mark.skipif(os.access("/proc/sys", os.W_OK) or not os.path.isdir("/proc/sys"),
                                                          reason="needs a read-only /proc/sys")),
    pytest.param("read-only directory", lambda t, m: [(t / "ro").mkdir(), os.chmod(t / "ro", 0o555), "train", "--data",
                                                      "digits", "--out", t / "ro" / "sub"][2:], "not writable",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")),
]


@pytest.mark.parametrize("name, setup, fragment", BAD_OUTPUTS,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in BAD_OUTPUTS])
def test_a_bad_output_location_is_refused_before_any_work(model, tmp_path, monkeypatch, name, setup, fragment):
    (tmp_path / "m").mkdir()
    own = tmp_path / "m" / "model.safetensors"
    own.write_bytes(model.read_bytes())
    (tmp_path / "blobs.npz").write_bytes((model.parent.parent / "blobs.npz").read_bytes())
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path, own)
    before = listing(tmp_path)
    r = CliRunner().invoke(cli, ["--quiet", *map(str, argv)], catch_exceptions=False)  # a traceback would raise
    err = r.stderr.strip().splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], r.stderr
    assert listing(tmp_path) == before  # nothing created, nothing changed, the input intact


# -- overwrite, leftovers, writers, full disk ---------------------------------------------------
def test_overwrite_replaces_the_run_directory_as_a_whole(model, uninterrupted, tmp_path):
    out = tmp_path / "run"
    r = invoke("prune", model, "--budget", "340B", "--no-analyze", "--export", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    (out / "notes.txt").write_text("from before")
    r = invoke("prune", model, *PRUNE, "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert_same_run(out, uninterrupted)  # no model.onnx, no notes.txt: nothing of the first run
    assert os.listdir(tmp_path) == ["run"]


def test_leftovers_of_killed_runs_are_removed_by_the_next_run_into_the_same_parent(model, tmp_path):
    gone = dead_pid()
    stage = tmp_path / f".p.shrinknet-{gone}-stage"
    stage.mkdir()
    (stage / "model.safetensors").write_bytes(b"half a model")
    (tmp_path / f".other.shrinknet-{gone}-3kd9.tmp").write_bytes(b"half a file")
    (tmp_path / "other").mkdir()
    (tmp_path / f".other.shrinknet-{gone}-old").mkdir()  # moved aside by a swap that finished but was not cleaned
    r = invoke("prune", model, *PRUNE, "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path)) == ["other", "p"]


def test_two_runs_into_the_same_directory_one_wins_whole(model, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "shrinknet", "--quiet", "prune", str(model), *PRUNE, "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    err = next(e for rc, e in results if rc == 2).strip().splitlines()
    assert len(err) == 1 and ("another shrinknet run is writing" in err[0] or "not empty" in err[0]), err
    assert_same_run(out, uninterrupted)
    assert os.listdir(tmp_path) == ["run"]


def test_a_run_that_holds_the_directory_makes_the_other_fail_at_once(model, tmp_path):
    out = tmp_path / "run"
    with files.claim(out):  # as a running shrinknet holds it
        r = subprocess.run([sys.executable, "-m", "shrinknet", "prune", str(model), *PRUNE, "--out", str(out)],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "another shrinknet run is writing" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_full_disk_leaves_the_previous_run_untouched(model, uninterrupted, tmp_path, monkeypatch, fail_at):
    """Saving fails half-way: the old run stays as it was; the pruning done is kept to resume from."""
    out = tmp_path / "run"
    r = invoke("prune", model, "--budget", "340B", "--no-analyze", "--out", out)
    assert r.exit_code == 0, r.output
    before = listing(tmp_path)
    from test_files import half_then_full_disk

    with monkeypatch.context() as m:
        half_then_full_disk(m, fail_at)
        r = CliRunner().invoke(cli, ["--quiet", "prune", str(model), *PRUNE, "--out", str(out), "--overwrite"],
                               catch_exceptions=False)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    ckpt = tmp_path / "run.checkpoint.json"
    assert "No space left on device" in r.stderr and f"kept in {ckpt}" in r.stderr, r.stderr
    after = listing(tmp_path)
    assert after.pop("run.checkpoint.json") and after == before
    r = invoke("prune", model, *PRUNE, "--out", out, "--overwrite", "--resume")  # space again: resume
    assert r.exit_code == 0, r.output
    assert_same_run(out, uninterrupted)
    assert os.listdir(tmp_path) == ["run"]


def test_export_over_an_existing_pair_replaces_both_or_neither(model, tmp_path, monkeypatch):
    r = invoke("export", model, "--format", "c", "--out", tmp_path / "model.c")
    assert r.exit_code == 0, r.output
    before = listing(tmp_path)
    from test_files import half_then_full_disk

    half_then_full_disk(monkeypatch, 2)  # the .h is written, the .c runs out of space half-way
    r = CliRunner().invoke(cli, ["--quiet", "export", str(model), "--format", "c", "--dtype", "float16",
                                 "--out", str(tmp_path / "model.c"), "--overwrite"], catch_exceptions=False)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "No space left" in r.stderr, r.output
    assert listing(tmp_path) == before


# -- same seed, same bytes ----------------------------------------------------------------------
def test_same_seed_gives_byte_identical_model_files(model, tmp_path):
    data = model.parent.parent / "blobs.npz"
    for out in ("a", "b"):
        r = invoke("train", "--data", data, "--hidden", "7,5", "--epochs", "5", "--out", tmp_path / out,
                   "--force")  # 5 epochs may end at chance, which train refuses without --force
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    _, meta = modelio.load_model(tmp_path / "a" / "model.safetensors")
    assert "seconds" not in json.dumps(meta)  # wall-clock time is printed and kept in run.json only


# -- interrupted and killed runs resume ----------------------------------------------------------
KILLER = textwrap.dedent("""
    import os, signal, sys
    from shrinknet.choose import checkpoint
    from shrinknet import cli
    from shrinknet.util import files
    when, sig = sys.argv[1], getattr(signal, sys.argv[2])
    if when == "swap":  # while moving the finished run in
        files._swap_in = lambda *args: os.kill(os.getpid(), sig)
    else:  # right after the n-th checkpoint is on disk
        write = checkpoint.Checkpointer.write
        def counted(self, state):
            write(self, state)
            if self.writes == int(when):
                os.kill(os.getpid(), sig)
        checkpoint.Checkpointer.write = counted
    cli.main(sys.argv[3:])
""")
# checkpoints: 1 after the unpruned network, 1 per removal (10), 1 final = 12
KILLS = [("1", "SIGKILL"), ("12", "SIGKILL"), ("swap", "SIGKILL"), ("3", "SIGINT"), ("8", "SIGTERM")]


def test_killed_and_interrupted_runs_resume_to_the_same_bytes(model, uninterrupted, tmp_path):
    procs = []
    for k, (when, sig) in enumerate(KILLS):
        out = tmp_path / f"k{k}" / "run"
        out.parent.mkdir()
        argv = ["--quiet", "prune", str(model), *PRUNE, "--out", str(out)]
        procs.append((when, sig, out, subprocess.Popen([sys.executable, "-c", KILLER, when, sig, *argv], env=ENV,
                                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for when, sig, out, p in procs:
        rc = p.wait(timeout=300)
        err = p.stderr.read().strip()
        ckpt = out.parent / "run.checkpoint.json"
        assert not out.exists(), (when, sig)  # all or nothing: nothing
        assert ckpt.is_file(), (when, sig)
        if sig == "SIGKILL":
            assert rc == -signal.SIGKILL, (when, rc, err)
        else:
            assert rc == {"SIGINT": 130, "SIGTERM": 143}[sig], (when, rc, err)
            what = "interrupted" if sig == "SIGINT" else "terminated (SIGTERM)"
            assert err == (f"{what}: nothing written to {out}; kept {ckpt} "
                           "(run the same command with --resume to continue)"), err
            assert sorted(os.listdir(out.parent)) == ["run.checkpoint.json"]  # no staging, no lock file
        # the same command again with --resume, or --resume RUN_DIR
        again = ["prune", model, *PRUNE, "--out", out, "--resume"] if when != "swap" else \
            ["prune", model, *PRUNE, "--resume", out]
        r = invoke(*again)
        assert r.exit_code == 0, (when, sig, r.output)
        assert_same_run(out, uninterrupted, (when, sig))
        assert os.listdir(out.parent) == ["run"], (when, sig)  # checkpoint, lock and leftovers gone


@pytest.mark.parametrize("change, message", [
    (["--method", "taylor2"], "other settings (method 'brute_force', now 'taylor2')"),
    (["--dtype", "float16"], "other settings (dtype 'float32', now 'float16')"),
    (["--data", "other.npz"], "other data"),
])
def test_resuming_with_other_data_or_settings_is_refused(model, tmp_path, monkeypatch, change, message):
    checkpoint_of(model, tmp_path)
    g = np.random.default_rng(5)  # other blobs like the model's: it classifies them (no start-check stop)
    y = g.integers(0, 3, 300)
    np.savez(tmp_path / "other.npz", X=(g.normal(size=(300, 4)) + np.eye(3, 4)[y] * 2.5).astype(np.float32), y=y)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    r = CliRunner().invoke(cli, ["--quiet", "prune", str(model), *PRUNE, *change, "--out", "run", "--resume"],
                           catch_exceptions=False)
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.output
    assert message in r.stderr, r.stderr
    assert listing(tmp_path) == before


def checkpoint_of(model, tmp_path) -> Path:
    """A checkpoint of an interrupted run, made in-process through the library hook."""
    from shrinknet.choose import checkpoint
    from shrinknet.data import datasets
    from shrinknet.cli import DEFAULT_REFIT
    from shrinknet.workflows.experiments import prune_on

    net, meta = modelio.load_model(model)
    ds = datasets.reload(meta["data"])
    ck = checkpoint.Checkpointer(tmp_path / "run.checkpoint.json", every=0)
    calls = {"n": 0}

    def hook(state, final=False):
        ck(state, final)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune_on(net, ds, "mse", budget_bytes=300, full_curve=True, checkpoint=hook, refit=DEFAULT_REFIT)  # as the CLI
    return ck.path


def test_another_model_is_refused(model, tmp_path):
    checkpoint_of(model, tmp_path)
    net, meta = modelio.load_model(model)
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-3
    other = modelio.save_model(tmp_path / "other.safetensors", net, meta)
    before = listing(tmp_path)
    r = CliRunner().invoke(cli, ["--quiet", "prune", str(other), *PRUNE, "--out", str(tmp_path / "run"), "--resume"],
                           catch_exceptions=False)
    assert r.exit_code == 2 and "was made on another model" in r.stderr and r.stderr.count("\n") == 1, r.output
    assert listing(tmp_path) == before


def test_missing_parents_are_created_with_the_output_and_removed_when_it_fails(model, tmp_path):
    before = listing(tmp_path)
    r = CliRunner().invoke(cli, ["--quiet", "prune", str(model), *PRUNE[2:], "--budget", "40",
                                 "--out", str(tmp_path / "a" / "b" / "run")], catch_exceptions=False)
    assert r.exit_code == 2 and "smallest network" in r.stderr, r.output  # found after the output was claimed
    assert listing(tmp_path) == before  # no a/b, no lock file, no checkpoint
    r = invoke("prune", model, *PRUNE, "--out", tmp_path / "a" / "b" / "run")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["run"]
