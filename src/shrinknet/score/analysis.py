"""The paper's analyses: estimates against the truth, gain curves, and correlated neurons.

- ``compare_estimates``: each estimate of Delta E against brute force (the ground truth), per
  layer and overall: Pearson, Spearman and Kendall correlation and the overlap of the k lowest.
- ``estimates_along_run``: the same on the masked networks of a pruning run, after 10%, 20%, ...
- ``gain_curves``: the error as one neuron's output is scaled by alpha (0 = switched off,
  1 = as trained), with the first- and second-order Taylor models drawn from alpha = 1.
- ``correlated_pairs``: neurons whose contributions to the next layer move together or cancel,
  and the error of removing either one or both.

Contribution correlation. Neuron j of hidden layer h contributes c_ji = w_ji o_j (eq. 5) to
neuron i above. Correlating the contributions of j and k over instances and targets i gives

    corr(c_j, c_k) = corr_n(o_j, o_k) * cos(w_j, w_k)

(the activation correlation times the cosine of the outgoing weight vectors): close to -1 for a
pair that cancels (same activity, opposite effect), close to +1 for a redundant pair.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import losses, network
from ..util import threads
from ..model.backprop2 import sweep
from ..model.parse import as_net
from .saliency import candidate_bar, removed_to_inf, score_batch

ESTIMATES = ("taylor1", "taylor2", "taylor2_exact", "magnitude")


def _setup(model, X, T, loss, mask):
    net = as_net(model)
    loss_ = losses.get(loss)
    data = network.prepare(net, X, T, loss_)
    masks = net.check_masks(mask)
    return net, loss_, data, masks, net.forward(data.X, masks)


def agreement(estimate: Tensor, truth: Tensor, k: int | None = None) -> dict:
    """Pearson, Spearman, Kendall correlation and overlap of the k lowest of two score vectors.

    Only finite entries of ``truth`` (kept neurons) are compared. ``k`` defaults to 10% of them
    (at least 1). ``overlap`` is |lowest_k(estimate) & lowest_k(truth)| / k.
    """
    try:
        from scipy import stats
    except ImportError:
        raise ImportError("estimate-vs-truth correlations need scipy: pip install 'shrinknet[report]'") from None

    ok = torch.isfinite(truth)
    e = estimate[ok].double().cpu().numpy()
    t = truth[ok].double().cpu().numpy()
    n = len(t)
    if k is not None and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = max(1, round(0.1 * n)) if k is None else min(k, n)
    low_e = set(e.argsort(kind="stable")[:k].tolist())
    low_t = set(t.argsort(kind="stable")[:k].tolist())
    nan = float("nan")
    constant = n < 2 or e.std() == 0 or t.std() == 0
    return {
        "n": n,
        "pearson": nan if constant else float(stats.pearsonr(e, t)[0]),
        "spearman": nan if constant else float(stats.spearmanr(e, t)[0]),
        "kendall": nan if constant else float(stats.kendalltau(e, t)[0]),
        "k": k,
        "overlap": len(low_e & low_t) / k,
    }


@threads.heavy
def compare_estimates(model, X, T, loss: str = "mse", methods=ESTIMATES, mask=None, k: int | None = None,
                      progress: bool = False) -> dict:
    """Each estimate against brute force, per hidden layer and over all neurons.

    ``progress`` shows a bar over the candidates of brute force and taylor2_exact.

    Returns {"truth": [per-layer tensors], "scores": {method: [...]},
             "agreement": {method: {"layers": [dict per layer], "overall": dict}}}.
    """
    net, loss_, data, masks, trace = _setup(model, X, T, loss, mask)
    slow = 1 + sum(m == "taylor2_exact" for m in methods)
    with torch.no_grad(), candidate_bar(progress, masks, slow, "brute force vs estimates") as bar:
        workers = threads.workers_for(threads.scoring_work(net, len(data)))
        truth = removed_to_inf(score_batch("brute_force", net, loss_, data, masks, trace, bar=bar, workers=workers), masks)
        out = {"truth": truth, "scores": {}, "agreement": {}}
        for m in methods:
            s = removed_to_inf(score_batch(m, net, loss_, data, masks, trace, bar=bar), masks)
            out["scores"][m] = s
            out["agreement"][m] = {
                "layers": [agreement(a, b, k) for a, b in zip(s, truth)],
                "overall": agreement(torch.cat(s), torch.cat(truth), k),
            }
    return out


def estimates_along_run(result, model, X, T, methods=ESTIMATES, fractions=None) -> list[dict]:
    """``compare_estimates`` on the masked network of ``result`` at each fraction removed.

    Returns one {"fraction", "step", "overall": {method: agreement}} per fraction reached.
    """
    if fractions is None:
        fractions = [f / 10 for f in range(0, 10)]
    rows = []
    seen = set()
    for f in fractions:
        k = max(i for i, s in enumerate(result.steps) if s.fraction_removed <= f + 1e-12)
        if k in seen:
            continue
        seen.add(k)
        cmp = compare_estimates(model, X, T, result.config["loss"], methods, mask=result.masks(k))
        rows.append({
            "fraction": result.steps[k].fraction_removed,
            "step": k,
            "overall": {m: cmp["agreement"][m]["overall"] for m in methods},
        })
    return rows


def gain_curves(model, X, T, neurons, loss: str = "mse", alphas=None, mask=None) -> dict:
    """Total error as the output of each neuron (h, j) is scaled by alpha.

    Returns {"alphas": (A,), "curves": [{"neuron": (h, j), "error": (A,), "taylor1": (A,),
    "taylor2": (A,)}]}. The Taylor models expand around alpha = 1 in delta o = (alpha - 1) o:
    E + delta o dE/do (eq. 6) and + 1/2 delta o^2 d2E/do^2 (eq. 8), so at alpha = 0 they give
    the taylor1 and taylor2 estimates of switching the neuron off.
    """
    net, loss_, data, masks, trace = _setup(model, X, T, loss, mask)
    a = torch.linspace(0, 10, 101) if alphas is None else torch.as_tensor(alphas)
    a = a.to(net.device, net.dtype)
    y = trace.o[-1]
    with torch.no_grad():
        E0 = loss_.per_instance(y, data.T).sum()
        records = sweep(net, loss_, data, masks, trace)
        curves = []
        for h, j in neurons:
            if not (0 <= h < net.n_hidden and 0 <= j < net.hidden_sizes[h]):
                raise ValueError(f"no neuron ({h}, {j}) in hidden sizes {net.hidden_sizes}")
            # x^(h+1) + the contribution of the change (alpha - 1) o_j for every alpha, through the next
            # layer cut to unit j's inputs (a neuron: (alpha - 1) o_j w_j, eq. 5; a channel: its map
            # through its kernel slice): (A, N, ...)
            groups = getattr(net, "groups", None)  # residual groups (layers/resnet.py): alpha is the group's gate
            b = net.blocks[h if groups is None else groups[h][0]]
            if groups is not None or b.split < len(b.tail):  # a depthwise block: alpha scales the unit at its
                E = net.gate_error(loss_, data, masks, h)  # mask point, before the depthwise conv (not linear after it)
                o_h = trace.o[groups[h][0]] if groups is not None else b.mask_point(trace.x[h], masks[h])
                gates = torch.ones(len(a), o_h.shape[1], dtype=a.dtype, device=a.device)
                gates[:, j] = a
                err = torch.stack([E(g, o_h) for g in gates])
            else:
                one = net.blocks[h + 1].param.keep(None, torch.tensor([j], device=net.device))
                u = (a - 1).view(-1, *[1] * trace.o[h].ndim) * trace.o[h][:, j: j + 1]  # (A, N, 1, ...)
                c = one.contribution(u.flatten(0, 1), torch.tensor([0], device=net.device))[0]
                xs = trace.x[h + 1] + c.view(len(a), *trace.x[h + 1].shape)
                err = E0 + loss_.delta(net.output_from(h + 1, xs, masks), y, data.T).sum(-1)
            r = records[h]
            g1 = (r.o[:, j] * r.dE_do[:, j]).sum()
            g2 = (r.o[:, j] ** 2 * r.d2E_do2[:, j]).sum()
            t1 = E0 + (a - 1) * g1
            curves.append({"neuron": (h, j), "error": err, "taylor1": t1, "taylor2": t1 + 0.5 * (a - 1) ** 2 * g2})
    return {"alphas": a, "base_error": float(E0), "curves": curves}


def contribution_correlation(o: Tensor, W: Tensor) -> Tensor:
    """(j, j) correlation of neuron contributions c_ji = w_ji o_j, over instances n and targets i.

    o: (N, j) outputs of one hidden layer; W: (i, j) the next layer's weight. Equals
    corr_n(o_j, o_k) * cos(w_j, w_k); 0 where a neuron is constant or has no outgoing weight.
    """
    oc = o - o.mean(0)
    cov = oc.T @ oc  # (j, j)
    G = W.T @ W  # (j, j): w_j . w_k
    scale = torch.sqrt(torch.outer(cov.diagonal() * G.diagonal(), cov.diagonal() * G.diagonal()))
    corr = cov * G / scale
    return torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)


def unit_correlation(net, o: Tensor, h: int) -> Tensor:
    """``contribution_correlation`` of hidden layer h's units: each unit's contribution to the next
    layer (conv.py/linear.py ``contribution``: a neuron's o_j w_j, a channel's whole map of change),
    correlated over instances and every position and output."""
    nxt = net.blocks[h + 1].param
    if nxt.kind == "linear" and nxt.block == 1:  # one column per unit: the closed form, no (C, N, i) maps
        return contribution_correlation(o.reshape(o.shape[0], -1), nxt.weight)  # a channel of one position: (N, C)
    units = torch.arange(o.shape[1], device=o.device)
    c = nxt.contribution(o, units).flatten(2)  # (C, N, R)
    # the contribution is linear in o: centre o over instances, as the closed form does
    c = c - nxt.contribution(o.mean(0, keepdim=True), units).flatten(2)
    cov = torch.einsum("jnr,knr->jk", c, c)
    d = cov.diagonal()
    return torch.nan_to_num(cov / torch.sqrt(torch.outer(d, d)), nan=0.0, posinf=0.0, neginf=0.0)


def top_pairs(corr: Tensor, mask: Tensor, count: int) -> list[tuple[int, int, float]]:
    """The ``count`` pairs j < k of kept neurons with the largest |correlation|."""
    J = corr.shape[0]
    iu = torch.triu_indices(J, J, offset=1, device=corr.device)
    both = mask[iu[0]] & mask[iu[1]]
    vals = corr[iu[0], iu[1]].abs().masked_fill(~both, -1.0)
    top = vals.topk(min(count, int(both.sum()))).indices if both.any() else []
    return [(int(iu[0, t]), int(iu[1, t]), float(corr[iu[0, t], iu[1, t]])) for t in top]


def correlated_pairs(model, X, T, loss: str = "mse", top: int = 10, mask=None) -> list[dict]:
    """The most strongly correlated pairs of each hidden layer, and the exact Delta E of removing
    the first, the second, and both together. ``interaction`` = both - first - second: a large
    positive value marks a cancelling pair that one-at-a-time removal misjudges."""

    net, loss_, data, masks, trace = _setup(model, X, T, loss, mask)
    rows = []
    with torch.no_grad():
        for h in range(net.n_hidden):
            k = h if getattr(net, "groups", None) is None else net.groups[h][0]  # a residual group: its lowest
            corr = unit_correlation(net, trace.o[k], k)  # member's contributions pick the pairs; their Delta E is exact
            for j, k, c in top_pairs(corr, masks[h], top):
                dj, dk, both = (
                    float(net.switch_off_delta(loss_, data, masks, trace, h, js)) for js in ([j], [k], [j, k])
                )
                rows.append({"layer": h, "j": j, "k": k, "corr": c, "delta_j": dj, "delta_k": dk,
                             "delta_both": both, "interaction": both - dj - dk})
    return rows

