"""The pins of issue #15 ("Unchanged results"): SHA-256 of what a user sees, for a grid of settings.

Run ``python tests/make_pins.py`` (from the repository root, with the package importable, e.g.
``PYTHONPATH=$PWD/src``) to compute every pin and write ``tests/pins.json``; ``tests/test_pins.py``
recomputes each job and compares. The pins were computed with the code of the commit named in
pins.json ("computed_on"), before the restructuring moved anything; regenerate them only on code
whose numbers are known to be right (that commit, checked out), never to make a failing pin pass.

What is pinned (every job computes a few named SHA-256 digests):
  files/<model>        bytes: the seeded model's model file (safetensors) and its exports (ONNX and
                       C .c/.h at float32/float16/int8, safetensors at float32/float16), and the
                       tensors a model file loads back to (a pin that survives a change of header)
  scores/<model>/<m>   floats: the bytes of ``shrinknet.saliency`` for each criterion of
                       ``shrinknet.METHODS``, without and with a mask
  run/<model>/<v>      floats: a ``shrinknet.prune`` run (every criterion x single/iterative,
                       iterative_pairs, refit None/final/every_step, float32/float16/int8, a bytes
                       budget, a RAM budget, max_fraction, max_drop, clip; MLPs: speeds screen and
                       fast): ``PruneResult.to_dict()`` (time fields removed, keys sorted), every
                       step's numbers as float64 bytes, the chosen network's model file and tensors;
                       with a budget also ``pick``/``fit`` and the chosen network's exports
  cli/<v>              floats: ``python -m shrinknet prune/export`` (run in this process): run.json
                       (time fields removed, the temporary directory replaced), steps.csv, the
                       saved model (bytes and the tensors it loads to) and exported files
"bytes" jobs hold no computed floats beyond int8 quantization (float64 arithmetic rounded to
float32 and int8): they hold on any machine. "floats" jobs are bitwise pins of float arithmetic:
they hold on the torch build and CPU kernels recorded in pins.json ("platform") only.

Model files: issue #15 plans one model-file format for MLPs and CNNs. Such a deliberate change of
the header changes the "model-file-*", "chosen-model-file" and "model.safetensors" digests only;
the "-loads", "chosen-tensors" and "fit" digests (the tensors themselves) must stay.

Every job runs with $SHRINKNET_THREADS=1 (see ``one_worker``), in a temporary working directory,
with ``shrinknet.__version__`` set to PINNED_VERSION; jobs are independent of each other's order.

Models and data come from the seeded builders of tests/helpers.py and tests/cnn_helpers.py
(tiny float64 networks), converted to float32 (int8 storage takes float32 models).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import runpy
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: the test helpers are siblings
    sys.path.insert(0, str(HERE))

import cnn_helpers  # noqa: E402
import helpers  # noqa: E402
import shrinknet  # noqa: E402

PINS = HERE / "pins.json"
#: the package version written into ONNX producer fields and C banners while pinning (a version
#: bump is not a change of results)
PINNED_VERSION = "0.3.0"


def platform() -> dict:
    """What the float pins depend on: the torch build and the CPU kernels it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def libraries() -> dict:
    """What the byte pins depend on besides the package: the file writers' versions (recorded only)."""
    import onnx
    import safetensors

    return {"python": sys.version.split()[0], "numpy": np.__version__, "onnx": onnx.__version__,
            "safetensors": safetensors.__version__}


# -- models and data ---------------------------------------------------------------------------
#: name -> (builder, index into its SETTINGS table)
MODELS = {
    "mlp-sigmoid-mse": (helpers, 1),  # 5-7-3-3, sigmoid, tanh output, bias
    "mlp-relu-ce": (helpers, 16),  # 5-7-3-3, relu, cross entropy, no bias
    "cnn-leaky-ce": (cnn_helpers, 5),  # 2x7x6, two convs (3x3 stride 2, 2x2), BN, adaptive pool
    "cnn-tanh-mse": (cnn_helpers, 1),  # 2x7x6, one conv, max pool, a hidden Linear, sigmoid output
}


@dataclass
class Case:
    model: torch.nn.Sequential  # float32
    X: torch.Tensor
    T: torch.Tensor
    X_test: torch.Tensor
    T_test: torch.Tensor
    loss: str
    input_shape: tuple | None  # a CNN's instance shape (export and model files need it)


def case(name: str) -> Case:
    builder, i = MODELS[name]
    s = builder.SETTINGS[i]
    model, _, X, T = builder.build(s)
    _, _, X_test, T_test = builder.build(s, seed=1)  # the same shapes, other draws
    f = lambda t: t.float() if t.is_floating_point() else t  # noqa: E731
    return Case(model.float(), f(X), f(T), f(X_test), f(T_test), s.loss,
                tuple(X.shape[1:]) if builder is cnn_helpers else None)


def meta(c: Case) -> dict:
    if c.loss == "cross_entropy":
        return {"loss": c.loss, "task": "classification", "class_values": [0, 1, 2]}
    return {"loss": c.loss, "task": "regression"}


# -- digests -----------------------------------------------------------------------------------
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_sha(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes())
    return h.hexdigest()


def tmp_free(path: Path, d: Path) -> bytes:
    """The bytes of ``path`` with the tmp dir ``d`` written as ``<tmp>`` wherever a file records a path
    (a model file's meta["data"], the exports that embed it): a safetensors header is rewritten with
    its new length, an ONNX file re-serialized, text replaced."""
    data = path.read_bytes()
    tmp = [str(d.resolve()), str(d)]
    if path.suffix == ".safetensors":
        n = struct.unpack("<Q", data[:8])[0]
        header = data[8:8 + n].decode()
        for t in tmp:
            header = header.replace(t, "<tmp>")
        return struct.pack("<Q", len(header.encode())) + header.encode() + data[8 + n:]
    if path.suffix == ".onnx":
        import onnx

        m = onnx.load_from_string(data)
        for prop in m.metadata_props:
            for t in tmp:
                prop.value = prop.value.replace(t, "<tmp>")
        return m.SerializeToString(deterministic=True)
    for t in tmp:
        data = data.replace(t.encode(), b"<tmp>")
    return data


def tensors_sha(model) -> str:
    """The parameters and buffers of a module, in order, as bytes (names left out: they are structure)."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode() + t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def without_times(obj):
    """obj with every time field ("seconds", "*_seconds") removed, recursively."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if not (k == "seconds" or k.endswith("_seconds"))}
    if isinstance(obj, (list, tuple)):
        return [without_times(v) for v in obj]
    return obj


def canonical(obj) -> bytes:
    """JSON with sorted keys; floats as repr (exact), non-finite ones by name."""
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        if isinstance(v, torch.Tensor):
            return fix(v.tolist())
        return v
    return json.dumps(fix(obj), sort_keys=True).encode()


def float_bytes(values) -> bytes:
    return b"".join(b"N" if v is None else struct.pack("<d", float(v)) for v in values)


@contextlib.contextmanager
def pinned_version():
    """PINNED_VERSION as the version the writers record: ``shrinknet.__version__`` (0.3) and, where
    it exists, ``shrinknet.version.__version__`` (after the restructuring the emitters read it there)."""
    import importlib

    try:
        version = importlib.import_module("shrinknet.version")
    except ImportError:
        version = None
    holders = [m for m in (shrinknet, version) if m is not None]
    old = [m.__version__ for m in holders]
    for m in holders:
        m.__version__ = PINNED_VERSION
    try:
        yield
    finally:
        for m, v in zip(holders, old):
            m.__version__ = v


def exports(model, d: Path, tag: str, input_shape, m: dict) -> dict:
    """The exports of ``model``: ONNX and C at float32/float16/int8, safetensors at float32/float16."""
    out = {}
    for fmt in ("onnx", "c", "safetensors"):
        for dtype in ("float32", "float16", "int8"):
            if fmt == "safetensors" and dtype == "int8":
                continue  # a model file stores float weights
            res = shrinknet.export(model, d / f"{tag}-{dtype}.{fmt}", format=fmt, dtype=dtype, meta=m,
                                   input_shape=input_shape)
            out[f"export-{fmt}-{dtype}"] = files_sha(res.paths)
    return out


# -- jobs --------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    floats: bool  # bitwise float pins: hold on the pinned platform only
    run: Callable[[Path], dict]  # tmp dir -> {name: sha256}


def files_job(name: str) -> Callable[[Path], dict]:
    def run(d: Path) -> dict:
        c = case(name)
        out = {}
        for dtype in (None, "float16"):
            p = shrinknet.save_model(d / f"model-{dtype}.safetensors", c.model, meta(c), dtype=dtype,
                                     input_shape=c.input_shape)
            out[f"model-file-{dtype or 'as-is'}"] = files_sha([p])
            out[f"model-file-{dtype or 'as-is'}-loads"] = tensors_sha(shrinknet.load_model(p)[0])
        out.update(exports(c.model, d, "seeded", c.input_shape, meta(c)))
        return out
    return run


def masks_of(model, input_shape) -> list[torch.Tensor]:
    """Every other unit of each hidden layer switched off (its first unit kept)."""
    net = shrinknet.as_net(model)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    return [torch.arange(n) % 2 == 0 for n in net.hidden_sizes]


def scores_job(name: str, method: str) -> Callable[[Path], dict]:
    def run(d: Path) -> dict:
        c = case(name)
        out = b""
        for mask in (None, masks_of(c.model, c.input_shape)):
            for s in shrinknet.saliency(c.model, c.X, c.T, method, loss=c.loss, mask=mask):
                out += s.contiguous().numpy().tobytes()
        return {"scores": sha(out)}
    return run


STEP_NUMBERS = ("score", "error", "accuracy", "test_error", "test_accuracy")

#: variant -> prune() keyword arguments (beside model, X, T, loss, X_test, T_test, progress=False)
RUNS = {
    **{f"{m}-{a}": dict(method=m, algorithm=a) for m in shrinknet.METHODS for a in ("single", "iterative")},
    "brute_force-iterative_pairs": dict(method="brute_force", algorithm="iterative_pairs", pairs=4),
    "brute_force-iterative-refit_final": dict(method="brute_force", algorithm="iterative", refit="final"),
    "brute_force-iterative-refit_every_step": dict(method="brute_force", algorithm="iterative", refit="every_step"),
    "taylor2-single-refit_every_step": dict(method="taylor2", algorithm="single", refit="every_step"),
    "brute_force-iterative_pairs-refit_final": dict(method="brute_force", algorithm="iterative_pairs",
                                                    refit="final", pairs=4),
    "brute_force-iterative-float16": dict(method="brute_force", algorithm="iterative", dtype="float16"),
    "brute_force-iterative-int8": dict(method="brute_force", algorithm="iterative", dtype="int8"),
    "taylor1-single-int8-refit_final": dict(method="taylor1", algorithm="single", dtype="int8", refit="final"),
    "taylor2-iterative-float16-refit_every_step": dict(method="taylor2", algorithm="iterative", dtype="float16",
                                                       refit="every_step"),
    "magnitude-single-max_fraction": dict(method="magnitude", algorithm="single", max_fraction=0.5),
    "brute_force-iterative-budget-refit_final": dict(method="brute_force", algorithm="iterative", budget=0.6,
                                                     refit="final"),
    "taylor2-iterative-budget-int8-full_curve": dict(method="taylor2", algorithm="iterative", budget=0.6,
                                                     dtype="int8", full_curve=True),
    "brute_force-single-max_drop-budget": dict(method="brute_force", algorithm="single", budget=0.8,
                                               max_drop=0.5),
    "taylor2-iterative-clip_median": dict(method="taylor2", algorithm="iterative", clip="median"),
    "brute_force-iterative-ram_budget": dict(method="brute_force", algorithm="iterative", ram_budget=0.8),
}
#: variants for fully connected networks only (the approximate speeds)
RUNS_MLP = {
    "brute_force-iterative-screen": dict(method="brute_force", algorithm="iterative", speed="screen",
                                         screen_size=2, checks=3),
    "brute_force-iterative-fast": dict(method="brute_force", algorithm="iterative", speed="fast", screen_size=2,
                                       block_fraction=0.5, checks=3),
}


def budget_of(model, input_shape, dtype: str, fraction: float) -> int:
    """``fraction`` of the unpruned network's bytes at ``dtype``, at least its smallest reachable size."""
    net = shrinknet.as_net(model)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    full = shrinknet.network_bytes(net, dtype)
    return int(fraction * full)


def run_job(name: str, variant: str) -> Callable[[Path], dict]:
    def run(d: Path) -> dict:
        c = case(name)
        kw = dict({**RUNS, **RUNS_MLP}[variant])
        budget = kw.pop("budget", None)
        if budget is not None:
            kw["budget_bytes"] = budget_of(c.model, c.input_shape, kw.get("dtype", "float32"), budget)
        ram = kw.pop("ram_budget", None)
        if ram is not None:  # a fraction of the unpruned network's peak activation RAM (its step 0)
            start = shrinknet.prune(c.model, c.X, c.T, loss=c.loss, max_fraction=0, progress=False).steps[0]
            kw["ram_budget_bytes"] = int(ram * start.ram_bytes)
        res = shrinknet.prune(c.model, c.X, c.T, loss=c.loss, X_test=c.X_test, T_test=c.T_test, progress=False,
                              **kw)
        out = {"result": sha(canonical(without_times(res.to_dict()))),
               "step-numbers": sha(float_bytes(getattr(s, f) for s in res.steps for f in STEP_NUMBERS))}
        if budget is not None or ram is not None or "max_drop" in kw:
            k, how = res.pick(budget_bytes=kw.get("budget_bytes"), max_drop=kw.get("max_drop"),
                              ram_budget_bytes=kw.get("ram_budget_bytes"))
            out["pick"] = sha(f"{k} {how}".encode())
        else:
            k = len(res.steps) - 1
        net = res.network(k)
        p = shrinknet.save_model(d / "chosen.safetensors", net, meta(c), input_shape=c.input_shape)
        out["chosen-model-file"] = files_sha([p])
        out["chosen-tensors"] = tensors_sha(net)  # survives a change of the model file's header
        if budget is not None or ram is not None:
            k_fit, fitted = res.fit(kw.get("budget_bytes"), kw.get("ram_budget_bytes"))
            out["fit"] = sha(str(k_fit).encode()) + ":" + tensors_sha(fitted)
            out.update(exports(net, d, "chosen", c.input_shape, meta(c)))
        return out
    return run


# -- the command line, in this process: ``python -m shrinknet ARGS`` ---------------------------------
def shrinknet_main(*args) -> None:
    """Run ``python -m shrinknet ARGS`` here (runpy: what ``-m`` runs); raise unless it exits 0."""
    argv, handlers = sys.argv, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = ["shrinknet", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_module("shrinknet", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = argv
        for s, h in handlers.items():
            signal.signal(s, h)
    if code != 0:
        raise RuntimeError(f"shrinknet {' '.join(map(str, args))} exited {code}:\n{stdout.getvalue()}{stderr.getvalue()}")


def cli_data(c: Case, d: Path) -> tuple[Path, Path]:
    """The model file and an .npz data set the model is good on (its own outputs as targets; for
    classification its argmax, 20 rows of each class from a pool of 1000), 60 rows."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(1000, *c.X.shape[1:], generator=g)
    with torch.no_grad():
        y = c.model(X)
    if c.loss == "cross_entropy":
        y = y.argmax(1)
        rows = torch.cat([(y == k).nonzero().squeeze(1)[:20] for k in range(y.max() + 1)]).sort().values
    else:
        rows = torch.arange(60)
    np.savez(d / "data.npz", X=X[rows].numpy(), y=y[rows].numpy())
    model = shrinknet.save_model(d / "model.safetensors", c.model, meta(c), input_shape=c.input_shape)
    return model, d / "data.npz"


#: variant -> (model, prune options)
CLI = {
    "prune-mlp-budget": ("mlp-relu-ce", ["--budget", "0.8", "--no-analyze"]),
    "prune-mlp-int8-max_drop-export": ("mlp-relu-ce", ["--dtype", "int8", "--max-drop", "20%", "--full-curve",
                                                       "--refit", "none", "--export", "onnx,c", "--no-analyze"]),
    "prune-mlp-mse-analyze": ("mlp-sigmoid-mse", ["--budget", "0.7", "--method", "taylor2", "--analyze"]),
    "prune-cnn-float16-budget": ("cnn-leaky-ce", ["--budget", "0.8", "--dtype", "float16", "--refit", "every_step",
                                                  "--no-analyze"]),
}


def cli_job(variant: str) -> Callable[[Path], dict]:
    name, options = CLI[variant]

    def run(d: Path) -> dict:
        c = case(name)
        model, data = cli_data(c, d)
        opts = list(options)
        if "--budget" in opts:  # a fraction of the model's float32 bytes, in bytes
            i = opts.index("--budget") + 1
            dtype = opts[opts.index("--dtype") + 1] if "--dtype" in opts else "float32"
            opts[i] = f"{budget_of(c.model, c.input_shape, dtype, float(opts[i]))}B"
        # the data by its name relative to the tmp dir (the cwd): the pruned model file records it
        shrinknet_main("-q", "prune", model, "--data", data.name, *opts, "--out", d / "run")
        out = {}
        for f in sorted(p for p in (d / "run").rglob("*") if p.is_file()):
            rel = f.relative_to(d / "run").as_posix()
            text = f.read_bytes()
            if f.suffix == ".json":
                text = canonical(without_times(json.loads(text.decode().replace(str(d.resolve()), "<tmp>")
                                                          .replace(str(d), "<tmp>"))))
            elif f.suffix in (".html", ".png", ".svg") or f.name.startswith("."):
                continue  # drawings (their numbers are in the JSON beside them), the directory's marker
            out[rel] = sha(tmp_free(f, d) if f.suffix == ".safetensors" else text)
            if f.suffix == ".safetensors":  # what it loads back to, beside its bytes
                out[rel + "-loads"] = tensors_sha(shrinknet.load_model(f)[0])
        for fmt, dtype, target in (("c", "int8", "m.c"), ("onnx", "float16", "m.onnx")):
            shrinknet_main("-q", "export", d / "run" / "model.safetensors", "--format", fmt, "--dtype", dtype,
                           "--out", d / target)
            paths = [d / target] + ([d / "m.h"] if fmt == "c" else [])
            h = hashlib.sha256()
            for p in paths:
                h.update(p.name.encode() + b"\0" + tmp_free(p, d))
            out[f"export-{fmt}-{dtype}"] = h.hexdigest()
        return out
    return run


def jobs() -> list[Job]:
    out = [Job(f"files/{m}", False, files_job(m)) for m in MODELS]
    out += [Job(f"scores/{m}/{method}", True, scores_job(m, method)) for m in MODELS for method in shrinknet.METHODS]
    out += [Job(f"run/{m}/{v}", True, run_job(m, v)) for m in MODELS for v in RUNS]
    out += [Job(f"run/{m}/{v}", True, run_job(m, v)) for m in MODELS if m.startswith("mlp") for v in RUNS_MLP]
    out += [Job(f"cli/{v}", True, cli_job(v)) for v in CLI]
    return out


JOBS = {j.id: j for j in jobs()}


@contextlib.contextmanager
def one_worker():
    """$SHRINKNET_THREADS=1 while pinning: an MLP's brute force sizes its candidate chunks by the
    worker count (exact.block_shape), and other chunks round differently (1-4 ulp); tiny networks
    get one worker by default anyway, this keeps a caller's $SHRINKNET_THREADS out of the pins."""
    old = os.environ.get("SHRINKNET_THREADS")
    os.environ["SHRINKNET_THREADS"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SHRINKNET_THREADS"]
        else:
            os.environ["SHRINKNET_THREADS"] = old


def compute(job: Job) -> dict:
    with tempfile.TemporaryDirectory() as tmp, pinned_version(), one_worker():
        cwd = os.getcwd()
        os.chdir(tmp)  # relative paths in what the command line records
        try:
            return job.run(Path(tmp))
        finally:
            os.chdir(cwd)


def git(*args) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE, check=True).stdout.strip()


def main() -> None:
    dirty = git("status", "--porcelain", "--", "../src", "helpers.py", "cnn_helpers.py", "make_pins.py")
    if dirty:
        sys.exit(f"the code behind the pins has uncommitted changes; commit or stash them first (pins name the "
                 f"commit they were computed on):\n{dirty}")
    pins = {}
    for job in JOBS.values():
        pins[job.id] = {"floats": job.floats, "sha256": compute(job)}
        print(job.id, len(pins[job.id]["sha256"]), file=sys.stderr)
    doc = {
        "about": "SHA-256 pins of issue #15; regenerate with: PYTHONPATH=$PWD/src python tests/make_pins.py",
        "computed_on": {"commit": git("rev-parse", "HEAD"), "src_tree": git("rev-parse", "HEAD:src")},
        "platform": platform(),
        "libraries": libraries(),
        "version_written": PINNED_VERSION,
        "n_pins": sum(len(p["sha256"]) for p in pins.values()),
        "jobs": pins,
    }
    PINS.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {doc['n_pins']} pins in {len(pins)} jobs to {PINS}", file=sys.stderr)


if __name__ == "__main__":
    main()
