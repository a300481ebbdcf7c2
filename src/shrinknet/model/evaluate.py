"""Evaluating a network's outputs: the total error E = sum_n E_n (eq. 1) and the accuracy, over
(Data, Trace) pairs and, in a distributed run, over the ranks that each hold their own rows."""

from __future__ import annotations

import torch

from ..util import distributed
from .losses import Loss


def total_error(loss: Loss, parts) -> float:
    """E = sum_n E_n over (Data, Trace) pairs (any iterable), summed part by part in float."""
    return sum((float(loss.per_instance(trace.o[-1], data.T).sum()) for data, trace in parts), 0.0)


def error_and_accuracy(loss: Loss, parts, group=None) -> tuple[float, float | None]:
    """Total error and accuracy (None without class labels) over a list of (Data, Trace) pairs
    (and over the ranks of ``group``, each holding its own rows)."""
    err, correct, n, labelled = total_error(loss, parts), 0, 0, True
    for data, trace in parts:
        if data.labels is None:
            labelled = False
        else:
            correct += int((trace.o[-1].argmax(1) == data.labels).sum())
        n += len(data)
    if group is not None:
        device = parts[0][0].X.device
        err_t, counts = torch.tensor([err], dtype=torch.float64, device=device), torch.tensor([correct, n], device=device)
        distributed.all_reduce_sum([err_t, counts], group)
        err, correct, n = float(err_t), int(counts[0]), int(counts[1])
    return err, (correct / n if labelled else None)


def regression_metrics(y, t) -> dict:
    """RMSE, MAE and R^2 of outputs y against targets t, both (N, out), over every output together:
    R^2 = 1 - SSE / SST with SST the squared deviation of each target column from its own mean
    (-inf when the targets are constant and the outputs miss them; 1 when both are exact)."""
    y, t = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    t = t.reshape(y.shape)
    d = y - t
    sse, sst = float((d * d).sum()), float(((t - t.mean(0)) ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else (1.0 if sse == 0 else -float("inf"))
    return {"rmse": (sse / d.numel()) ** 0.5, "mae": float(d.abs().mean()), "r2": r2}
