"""prune's one-line choice: a budget the network already fits says so (no '-0.00 accuracy points'), a
loss that rounds to nothing has no minus sign, and the max-drop refusal is grammatical."""

from __future__ import annotations

import pytest

from shrinknet.choose.result import PruneResult, Step
from shrinknet.workflows.experiments import _signed, choice_summary


def _result(accs, errors):
    steps = [Step(k, k / 10, [(0, k)] if k else [], None, e, a, None, None, 100 - 10 * k, 400 - 40 * k, [10 - k])
             for k, (a, e) in enumerate(zip(accs, errors))]
    return PruneResult({"dtype": "float32", "loss": "mse"}, steps, {"hidden": [10]})


@pytest.mark.parametrize("accs, budget, drop, has, lacks", [
    ([0.9, 0.9 - 1e-9, 0.5], 10 ** 6, None,
     ["kept step 0: the network already fits the budget [budget 976.56 KiB", "nothing removed"], ["-0.00", "against"]),
    ([0.9, 0.5, 0.4], None, 0.01, ["kept step 0: no removal stays within the max drop", "nothing removed"], ["-0.00"]),
    ([0.9, 0.9 + 1e-9, 0.5], 360, None, ["kept step 1 by the budget", "(+0.00 accuracy points against the start)"],
     ["-0.00"]),
    ([0.9, 0.85, 0.5], 360, None, ["(-5.00 accuracy points against the start)"], ["nothing removed"]),
    ([None, None, None], 10 ** 6, None, ["the network already fits the budget", "nothing removed"], ["%"]),
], ids=["fits", "nothing within the drop", "rounds to zero", "real loss", "regression fits"])
def test_choice_summary(accs, budget, drop, has, lacks):
    line = choice_summary(_result(accs, [1.0, 1.0 + 1e-9, 3.0]), budget, drop, "float32")
    assert all(h in line for h in has) and not any(x in line for x in lacks), line
    assert "\n" not in line


@pytest.mark.parametrize("x, text", [(-0.001, "+0.00"), (0.001, "+0.00"), (-5.0, "-5.00"), (2.5, "+2.50"), (0.0, "+0.00")])
def test_signed_never_shows_minus_zero(x, text):
    assert _signed(x, ".2f") == text


@pytest.mark.parametrize("d, words", [(1, "for 1 accuracy point write '1%' or 0.01"),
                                      (5, "for 5 accuracy points write '5%' or 0.05")])
def test_max_drop_refusal_is_grammatical(d, words):
    with pytest.raises(ValueError, match=f"^max_drop {d} is 100 accuracy points or more: {words}$"):
        _result([0.9, 0.8, 0.5], [1.0, 2.0, 3.0]).within(d)


def test_choice_summary_does_not_repeat_the_kept_warning():
    import warnings

    r = _result([0.9, 0.85, 0.5], [1.0, 2.0, 3.0])
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        line = choice_summary(r, 320, None, "float32")
    assert "kept step 2" in line and got == []
    assert r.kept_warning(2) is not None  # ... though there is one to give
