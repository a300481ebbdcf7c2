"""Unchanged results (issue #15): every pinned number a user sees is bitwise what it was.

tests/pins.json holds SHA-256 digests of model files, exports, scores, prune runs and command-line
runs for the grid in tests/make_pins.py, computed with the commit it names ("computed_on"), before
the restructuring moved anything. Each test recomputes one job of that grid and compares every
digest. "bytes" jobs (the seeded models' files and exports) hold on any machine; "floats" jobs are
bitwise pins of float arithmetic and hold on the torch build and CPU kernels pins.json records
("platform"): elsewhere they FAIL, saying so, rather than skip (a skipped pin compares nothing).
Regenerate only on the code that computed them: ``PYTHONPATH=$PWD/src python tests/make_pins.py``.
"""

from __future__ import annotations

import json

import pytest

import helpers
import make_pins

PINS = json.loads(make_pins.PINS.read_text())
REGENERATE = ("Run them where they were computed (CI's machines), or pin this platform: check out commit "
              f"{PINS['computed_on']['commit'][:12]} (the code they were computed with), run "
              "`PYTHONPATH=$PWD/src python tests/make_pins.py` there and carry the new tests/pins.json back.")


def test_the_pins_cover_the_grid():
    """pins.json and the grid of make_pins.py name the same jobs (a job added or dropped is seen)."""
    assert sorted(PINS["jobs"]) == sorted(make_pins.JOBS)
    assert PINS["n_pins"] == sum(len(j["sha256"]) for j in PINS["jobs"].values())
    assert all(PINS["jobs"][k]["floats"] == j.floats for k, j in make_pins.JOBS.items())
    assert set(PINS["platform"]) == {"torch", "cpu_capability"}


def _check(job_id: str) -> None:
    pinned = PINS["jobs"][job_id]
    if pinned["floats"]:
        p = PINS["platform"]
        helpers.require_float_platform((p["torch"], p["cpu_capability"]), f"The bitwise float pins of {job_id}",
                                       REGENERATE)
    got = make_pins.compute(make_pins.JOBS[job_id])
    changed = sorted(k for k in pinned["sha256"].keys() | got.keys() if pinned["sha256"].get(k) != got.get(k))
    assert not changed, (f"{job_id}: {', '.join(changed)} differ from the pins computed on "
                         f"{PINS['computed_on']['commit'][:12]}")


BYTES = [k for k, j in make_pins.JOBS.items() if not j.floats]
FLOATS = [k for k, j in make_pins.JOBS.items() if j.floats]


@pytest.mark.parametrize("job_id", BYTES)
def test_bytes_pin(job_id):
    _check(job_id)


# the runs call prune() with 0.3's keywords on purpose (users' scripts do): its shim warns
@pytest.mark.filterwarnings(r"ignore:prune\(.*\) is deprecated:FutureWarning")
@pytest.mark.parametrize("job_id", FLOATS)
def test_float_pin(job_id):
    _check(job_id)
