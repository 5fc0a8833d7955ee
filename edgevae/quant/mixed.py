"""Mixed precision, the search's last resort when no recipe fits the budget: the closest
candidate with its costliest Gemm nodes kept in float, fewest first.

The nodes' costs come from `explain` (each quantization alone, summed per node). The first
variant within the budget wins; what it keeps in float and what that costs in size and speed
against the all-int8 candidate go into the report (`QuantReport.mixed`) and the manifest.
"""

from __future__ import annotations

from typing import Any

from . import measure
from .explain import explain_models, node_costs
from .measure import Candidate
from .recipes import RECIPES


def mixed_precision(search, closest: Candidate, results: list[Candidate]):
    """(the first mixed-precision variant of `closest` within the budget or None, the record).
    `search` is the running `search._Search`; every variant tried is appended to `results`."""
    ctx = search.ctx
    items = explain_models(
        ctx, RECIPES[closest.recipe].method, search.paths(closest), search.work,
        progress=search.progress,
    )  # fmt: skip
    costs = node_costs(items)
    record: dict[str, Any] = {
        "recipe": closest.recipe,
        "node_costs": [{"role": r, "node": n, "nll_delta": c} for r, n, c in costs],
        "tried": [],
    }
    # Keeping every node in float is the fp32 model: at most all but one.
    for k in range(1, len(costs)):
        keep: dict[str, list[str]] = {}
        for role, node, _ in costs[:k]:
            keep.setdefault(role, []).append(node)
        cand = Candidate(closest.recipe)
        search.progress(f"mixed precision: {k} node(s) in float", k - 1, len(costs) - 1)
        ok = search.add(cand, keep, tag=f".mixed{k}")
        results.append(cand)
        record["tried"].append(
            {"kept_float": keep, "nll_delta": cand.nll_delta, "error": cand.error}
        )
        if ok:
            cand.score_ceiling = closest.score_ceiling
            pair = [(c, search.sessions[c.label]) for c in (closest, cand)]
            measure.time_candidates(ctx, pair, ctx.paired.x.shape[1], drop=False)
            record.update(_costs(closest, cand))
            return cand, record
    tried = len(record["tried"])
    record["note"] = (
        f"mixed precision of {closest.recipe} kept up to {tried} of {len(costs)} Gemm nodes "
        "in float and was still over"
    )
    return None, record


def _costs(uniform: Candidate, mixed: Candidate) -> dict[str, Any]:
    """What keeping nodes in float costs: bytes and speedups against the all-int8 variant."""
    return {
        "label": mixed.label,
        "kept_float": mixed.kept_float,
        "nll_delta": mixed.nll_delta,
        "nll_delta_all_int8": uniform.nll_delta,
        "bytes": dict(mixed.bytes),
        "bytes_all_int8": dict(uniform.bytes),
        "speedup": dict(mixed.speedup),
        "speedup_all_int8": dict(uniform.speedup),
    }
