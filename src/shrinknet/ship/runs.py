"""Run directories: what ``shrinknet prune`` writes and ``shrinknet report`` reads.

    RUN_DIR/run.json          PruneResult.to_dict() plus "name" and "extras" (budget, export sizes...)
    RUN_DIR/steps.csv         one row per step: the same numbers as run.json, for spreadsheets
    RUN_DIR/analysis.json     optional: estimates vs truth, along-run agreement, gain curves, pairs
    RUN_DIR/model.safetensors optional: the pruned network chosen for the budget

Every file is written to a temporary name and renamed, so an interrupted run leaves no
half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path


from ..util.files import jsonable, write_text
from ..choose.result import PruneResult

STEP_COLUMNS = (
    "n_removed", "fraction_removed", "removed", "score", "error", "accuracy",
    "test_error", "test_accuracy", "params", "bytes", "kept",
)


def steps_csv(result: PruneResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(STEP_COLUMNS)
    for s in result.steps:
        row = []
        for c in STEP_COLUMNS:
            v = getattr(s, c)
            if c == "removed":
                v = " ".join(f"{h}:{j}" for h, j in v)
            elif c == "kept":
                v = " ".join(map(str, v))
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()


def variant_name(config: dict) -> str:
    """"refit final, int8", "switch-off, float32", "refit final, int8 full-integer": how a run's networks are
    made (its refit and storage dtype; an ``integer_only`` run records the full-integer network)."""
    parts = [f"refit {config['refit']}" if config.get("refit") else "switch-off"]
    return ", ".join(parts + [(config.get("dtype") or "float32") + (" full-integer" if config.get("integer_only") else "")])


def run_label(algorithm: str, method: str) -> str:
    """A run's default name, the one spelling every command and the report use: "iterative brute force",
    "single taylor2", "iterative pairs magnitude" (underscores read as spaces)."""
    return f"{algorithm} {method}".replace("_", " ")


def save_run(run_dir: str | os.PathLike, result: PruneResult, name: str | None = None,
             analysis: dict | None = None, extras: dict | None = None) -> Path:
    """Write run.json, steps.csv and (if given) analysis.json into ``run_dir`` (created)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    doc["name"] = name or run_label(result.config["algorithm"], result.config["method"])
    doc["extras"] = jsonable(extras or {})
    write_text(run_dir / "steps.csv", steps_csv(result))
    if analysis is not None:
        write_text(run_dir / "analysis.json", json.dumps(jsonable(analysis)))
    write_text(run_dir / "run.json", json.dumps(jsonable(doc), indent=1))
    return run_dir


def load_run(run_dir: str | os.PathLike) -> dict:
    """{"dir", "name", "result": PruneResult, "extras", "analysis" (dict or None)}.

    Raises ValueError naming the problem when the directory is not a run directory.
    """
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a shrinknet run directory (no run.json); make one with 'shrinknet prune'")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        result = PruneResult.from_dict(doc)
    except RecursionError:
        raise ValueError(f"{path} is not a valid shrinknet run: its JSON is nested too deeply") from None
    except (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a valid shrinknet run: {e}") from None
    analysis = None
    apath = run_dir / "analysis.json"
    if apath.is_file():
        try:
            analysis = json.loads(apath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{apath} is not valid JSON: {e}") from None
    return {"dir": run_dir, "name": doc.get("name", run_dir.name), "result": result,
            "extras": doc.get("extras", {}), "analysis": analysis}
