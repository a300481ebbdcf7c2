"""Checkpoints of a pruning run: resuming from any of them ends exactly as an uninterrupted run."""

import json

import pytest
import torch

from shrinknet import prune
from shrinknet.choose import checkpoint

RUNS = [  # (algorithm, method, loss): every algorithm, an estimate, the seeded random baseline
    ("iterative", "brute_force", "mse"),
    ("iterative", "taylor2", "cross_entropy"),
    ("single", "taylor1", "mse"),
    ("single", "brute_force", "cross_entropy"),
    ("iterative_pairs", "brute_force", "mse"),
    ("iterative", "random", "mse"),
]


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    X = torch.randn(40, 4, generator=g)
    T = torch.randint(0, 3, (40,), generator=g)
    return model, X, T


def run(model, X, T, algorithm, method, loss, **kw):
    return prune(model, X, T, method=method, algorithm=algorithm, loss=loss, progress=False, X_test=X[:15],
                 T_test=T[:15], batch_size=16, **kw)


def states_of(model, X, T, *args):
    """Every state the hook is given, as it would be read back from the checkpoint file."""
    saved = []
    run(model, X, T, *args, checkpoint=lambda state, final=False: saved.append(
        checkpoint.decode(json.loads(checkpoint.dumps(state.to_dict())))))
    return saved


@pytest.mark.parametrize("algorithm, method, loss", RUNS, ids=["-".join(r) for r in RUNS])
def test_resuming_from_any_checkpoint_gives_the_uninterrupted_run(algorithm, method, loss):
    model, X, T = problem()
    want = run(model, X, T, algorithm, method, loss)
    saved = states_of(model, X, T, algorithm, method, loss)
    assert len(saved) == len(want.steps) + 1  # after step 0, after every step, and the final one
    for k, state in enumerate(saved):
        assert len(state["steps"]) == min(k + 1, len(want.steps))
    last = len(saved) - 1
    for k in sorted({0, 1, last // 2, last - 1, last}):  # start, one step, middle, all steps, final
        state = saved[k]
        got = run(model, X, T, algorithm, method, loss, resume=state)
        assert got.steps == want.steps, f"resumed after {len(state['steps']) - 1} steps"  # every float, bit for bit


@pytest.mark.parametrize("options", [{"refit": "final"}, {"dtype": "int8"},
                                     {"refit": "every_step", "dtype": "int8", "algorithm": "single"},
                                     {"dtype": "int8", "integer_only": True},
                                     {"refit": "final", "dtype": "int8", "integer_only": True, "method": "taylor2"}],
                         ids=["refit-final", "int8", "single-refit-every-step-int8", "integer-only",
                              "integer-only-refit-final-taylor2"])
def test_refit_and_int8_runs_resume_exactly(options):
    """Their networks are rebuilt from the masks, so restoring the masks restores them too."""
    model, X, T = problem()
    args = {"algorithm": "iterative", "method": "brute_force", "loss": "mse", **options}
    kw = dict(progress=False, X_test=X[:15], T_test=T[:15])
    want = prune(model, X, T, **args, **kw)
    saved = []
    prune(model, X, T, **args, **kw, checkpoint=lambda state, final=False: saved.append(
        checkpoint.decode(json.loads(checkpoint.dumps(state.to_dict())))))
    k = len(saved) // 2
    assert prune(model, X, T, **args, **kw, resume=saved[k]).steps == want.steps


def test_the_hook_sees_the_state_after_an_interruption():
    """Ctrl-C in the middle of a step: the final checkpoint holds the steps completed before it."""
    model, X, T = problem()
    saved, calls = [], {"n": 0}

    def hook(state, final=False):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        saved.append((final, json.loads(checkpoint.dumps(state.to_dict()))))

    with pytest.raises(KeyboardInterrupt):
        run(model, X, T, "iterative", "brute_force", "mse", checkpoint=hook)
    final, state = saved[-1]
    assert final and len(state["steps"]) == 4  # steps 0..3 were recorded when the 4th call was interrupted
    want = run(model, X, T, "iterative", "brute_force", "mse")
    assert run(model, X, T, "iterative", "brute_force", "mse", resume=checkpoint.decode(state)).steps == want.steps


@pytest.mark.parametrize("change, message", [
    ("model", "another model"),
    ("data", "other data"),
    ("method", r"other settings \(method 'brute_force', now 'taylor2'\)"),
    ("batch_size", r"other settings \(batch_size 16, now 8\)"),
    ("test data", "other data"),
])
def test_a_checkpoint_of_another_run_is_refused(change, message):
    model, X, T = problem()
    state = states_of(model, X, T, "iterative", "brute_force", "mse")[3]
    kw = dict(algorithm="iterative", method="brute_force", loss="mse")
    if change == "model":
        model = problem(seed=1)[0]
    elif change == "data":
        X = X + 1e-6
    elif change == "method":
        kw["method"] = "taylor2"
    if change == "batch_size":
        with pytest.raises(ValueError, match=message):
            prune(model, X, T, progress=False, X_test=X[:15], T_test=T[:15], batch_size=8, resume=state, **kw)
        return
    if change == "test data":
        with pytest.raises(ValueError, match=message):
            prune(model, X, T, progress=False, X_test=X[:14], T_test=T[:14], batch_size=16, resume=state, **kw)
        return
    with pytest.raises(ValueError, match=message):
        run(model, X, T, resume=state, **kw)


def test_checkpointer_writes_first_then_every_interval_and_when_final(tmp_path):
    now = [0.0]
    ck = checkpoint.Checkpointer(tmp_path / "c.json", every=30, clock=lambda: now[0])

    class State:
        def to_dict(self):
            step = {"n_removed": 0, "fraction_removed": 0.0, "removed": [], "score": float("inf"), "error": 1.5,
                    "accuracy": None, "test_error": None, "test_accuracy": None, "params": 10, "bytes": 40,
                    "kept": [3]}
            return {"fingerprint": {"model": "m", "data": "d", "settings": {}}, "steps": [step], "ranking": None}

    for t, final, writes in [(0, False, 1), (10, False, 1), (29.9, False, 1), (30, False, 2), (31, True, 3),
                             (45, False, 3), (61, False, 4)]:
        now[0] = t
        ck(State(), final)
        assert ck.writes == writes, t
    doc = checkpoint.load(tmp_path / "c.json")
    assert doc["steps"][0]["score"] == float("inf")  # non-finite floats survive standard JSON
    assert "Infinity" not in (tmp_path / "c.json").read_text()


@pytest.mark.parametrize("text, message", [
    ("{", "not a readable checkpoint"),
    ('{"format": "something else"}', "not a shrinknet pruning checkpoint"),
    ('{"format": "shrinknet-prune-checkpoint", "version": 99, "steps": [{}]}', "version must be 1"),
    ('{"format": "shrinknet-prune-checkpoint", "version": 1, "steps": []}', "steps must list 1 to"),
    ("[" * 100000 + "]" * 100000, "not a readable checkpoint"),
])
def test_load_refuses_what_is_not_a_checkpoint(tmp_path, text, message):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        checkpoint.load(tmp_path / "c.json")
