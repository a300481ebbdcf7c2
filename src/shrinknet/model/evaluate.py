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
