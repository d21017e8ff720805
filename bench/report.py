"""The benchmark's table, targets, JSON and chart, built from the runners' result lines."""

from __future__ import annotations

import importlib
import json
import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SYSTEMS = ("direct", "aiodurable", "DBOS")

Values = Mapping[str, float]  # system -> value of one metric
Check = Callable[[Values], "bool | None"]  # whether a target holds; None: a figure is missing


def _ratio(values: Values, top: str, bottom: str) -> float | None:
    a, b = values.get(top), values.get(bottom)
    return None if a is None or b is None or b == 0 else a / b


def _check(top: str, bottom: str, op: Callable[[float, float], bool], bound: float) -> Check:
    def check(values: Values) -> bool | None:
        ratio = _ratio(values, top, bottom)
        return None if ratio is None else op(ratio, bound)

    return check


def _overshoot(values: Values) -> bool | None:
    a, d = values.get("aiodurable"), values.get("direct")
    return None if a is None or d is None else a - d <= 2.0


def _at_least(bound: float) -> Check:
    def check(values: Values) -> bool | None:
        a = values.get("aiodurable")
        return None if a is None else a >= bound

    return check


def _below(bound: float) -> Check:
    def check(values: Values) -> bool | None:
        a = values.get("aiodurable")
        return None if a is None else a < bound

    return check


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a workload, and the targets that apply to it."""

    workload: str
    metric: str
    label: str
    unit: str
    scale: float = 1.0  # displayed value = measured value * scale
    targets: tuple[tuple[str, Check], ...] = ()


ROWS = (
    Row(
        "W1",
        "median_ms",
        "10-step workflow, sequential: median",
        "ms",
        targets=(
            ("a/d <= 1.5", _check("aiodurable", "direct", operator.le, 1.5)),
            ("D/a >= 6", _check("DBOS", "aiodurable", operator.ge, 6.0)),
        ),
    ),
    Row("W1", "p99_ms", "10-step workflow, sequential: p99", "ms"),
    Row("W1", "0step_median_ms", "0-step workflow: median", "ms"),
    Row("W1", "step_ms", "marginal cost of a step (t10-t0)/10", "ms"),
    Row(
        "W2",
        "workflows_per_s",
        "3-step workflows, 64 in flight",
        "wf/s",
        targets=(
            ("a/d >= 1", _check("aiodurable", "direct", operator.ge, 1.0)),
            ("D/a <= 1/15", _check("DBOS", "aiodurable", operator.le, 1 / 15)),
        ),
    ),
    Row("W2", "steps_per_s", "3-step workflows, 64 in flight", "steps/s"),
    Row("W2", "cpu_ms_per_workflow", "client CPU per workflow", "ms"),
    Row(
        "W3",
        "median_ms",
        "send -> recv -> set_event -> get_event, 64 pairs: median",
        "ms",
        targets=(
            ("a/d <= 2", _check("aiodurable", "direct", operator.le, 2.0)),
            ("D/a >= 5", _check("DBOS", "aiodurable", operator.ge, 5.0)),
        ),
    ),
    Row("W3", "p99_ms", "send -> recv -> set_event -> get_event, 64 pairs: p99", "ms"),
    Row("W3", "round_trips_per_s", "round trips of 64 pairs at once", "trips/s"),
    Row(
        "W4",
        "overshoot_median_ms",
        "0.2 s durable sleep: median overshoot",
        "ms",
        targets=(("a-d <= 2 ms", _overshoot),),
    ),
    Row(
        "W5",
        "recovered_per_s",
        "recovery of PENDING 5-step workflows (2 done)",
        "wf/s",
        targets=(("a >= 2000/s", _at_least(2000.0)),),
    ),
    Row("W5", "seconds", "recovery: new runtime until all SUCCESS", "s"),
    Row("W7", "adopted_per_s", "adoption of W5's workflows from another version", "wf/s"),
    Row("W7", "seconds", "adoption: upgrade_workflows() until all SUCCESS", "s"),
    Row(
        "W6",
        "bytes_per_waiting",
        "memory per workflow waiting in recv",
        "KB",
        scale=1 / 1024,
        targets=(("a < 10 KB", _below(10 * 1024)),),
    ),
    Row("W6", "wake_all_s", "wake every waiting workflow (sends + results)", "s"),
)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def values_of(results: Sequence[Mapping[str, Any]], row: Row) -> dict[str, float]:
    """The measured value of ``row`` per system."""
    found: dict[str, float] = {}
    for result in results:
        value = result.get(row.metric)
        if result.get("workload") == row.workload and isinstance(value, int | float):
            found[str(result["system"])] = float(value)
    return found


def rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every table row that has a figure, as plain data (for the JSON file too)."""
    out = []
    for row in ROWS:
        values = values_of(results, row)
        if not values:
            continue
        checks = [(text, check(values)) for text, check in row.targets]
        out.append(
            {
                "workload": row.workload,
                "metric": row.metric,
                "label": row.label,
                "unit": row.unit,
                "values": values,
                "aiodurable/direct": _ratio(values, "aiodurable", "direct"),
                "DBOS/aiodurable": _ratio(values, "DBOS", "aiodurable"),
                "targets": [{"target": t, "met": met} for t, met in checks],
            }
        )
    return out


BEFORE = "before"
"""The system name of aiodurable as of a baseline commit (``run.py --baseline REF``)."""


def comparison(results: Sequence[Mapping[str, Any]]) -> str:
    """Before and after a change, side by side: each figure, and each as a ratio to the direct
    baseline measured in the same round (what to compare on a noisy machine); with several
    rounds (``--repeat``), the median of each over the rounds."""
    rounds = sorted({int(r.get("round", 0)) for r in results})
    header = ["", "metric", "unit", "before", "after", "before/direct", "after/direct", "change"]
    lines = [header]
    for row in ROWS:
        per_round = [values_of([r for r in results if r.get("round", 0) == n], row) for n in rounds]
        pairs = [v for v in per_round if BEFORE in v and "aiodurable" in v and "direct" in v]
        if not pairs:
            continue
        before = statistics.median(v[BEFORE] for v in pairs)
        after = statistics.median(v["aiodurable"] for v in pairs)
        b_ratio = statistics.median(v[BEFORE] / v["direct"] for v in pairs if v["direct"])
        a_ratio = statistics.median(v["aiodurable"] / v["direct"] for v in pairs if v["direct"])
        change = (a_ratio / b_ratio - 1) * 100 if b_ratio else None
        lines.append(
            [
                row.workload,
                row.label,
                row.unit,
                _fmt(before * row.scale),
                _fmt(after * row.scale),
                _fmt(b_ratio),
                _fmt(a_ratio),
                "-" if change is None else f"{change:+.1f}%",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "| "
        + " | ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        + " |"
        for line in lines
    )


def table(results: Sequence[Mapping[str, Any]]) -> str:
    """One table: each system's figure, the two ratios, and the targets with whether they hold."""
    header = ["", "metric", "unit", *SYSTEMS, "aiod/direct", "DBOS/aiod", "target", "met"]
    lines: list[list[str]] = [header]
    by_key = {(row.workload, row.metric): row for row in ROWS}
    for data in rows(results):
        row = by_key[(data["workload"], data["metric"])]
        values = data["values"]
        met = [m for m in (t["met"] for t in data["targets"]) if m is not None]
        lines.append(
            [
                row.workload,
                row.label,
                row.unit,
                *(
                    _fmt(v * row.scale if (v := values.get(s)) is not None else None)
                    for s in SYSTEMS
                ),
                _fmt(data["aiodurable/direct"]),
                _fmt(data["DBOS/aiodurable"]),
                ", ".join(t["target"] for t in data["targets"]),
                ""
                if not data["targets"]
                else ("yes" if met and all(met) else "NO" if met else "?"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = set(range(3, 8))
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append(
                "|"
                + "|".join(
                    ("-" * (w + 1) + ":" if i in numeric else "-" * (w + 2))
                    for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(out)


def write_json(path: str, meta: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
    """Everything measured, with the table's rows and the run's versions and settings."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows(results), "results": list(results)}, f, indent=2)


CHART = (
    ("W1", "median_ms", "W1 10-step workflow, median (ms)"),
    ("W2", "workflows_per_s", "W2 workflows/s, 64 in flight"),
    ("W3", "median_ms", "W3 round trip, 64 pairs, median (ms)"),
    ("W4", "overshoot_median_ms", "W4 sleep overshoot, median (ms)"),
    ("W5", "recovered_per_s", "W5 recovered workflows/s"),
    ("W6", "bytes_per_waiting", "W6 KB per waiting workflow"),
)


def write_png(path: str, results: Sequence[Mapping[str, Any]], title: str) -> str | None:
    """A bar chart of each workload's headline figure; a note instead when matplotlib is
    missing."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return f"no chart written to {path}: matplotlib is not installed"
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    colors = {"direct": "#999999", "aiodurable": "#1f77b4", "DBOS": "#ff7f0e"}
    by_key = {(row.workload, row.metric): row for row in ROWS}
    for ax, (workload, metric, name) in zip(axes.flat, CHART, strict=True):
        row = by_key[(workload, metric)]
        values = values_of(results, row)
        systems = [s for s in SYSTEMS if s in values]
        heights = [values[s] * row.scale for s in systems]
        bars = ax.bar(systems, heights, color=[colors[s] for s in systems])
        ax.bar_label(bars, labels=[_fmt(h) for h in heights], fontsize=8)
        ax.set_title(name, fontsize=10)
        if not systems:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
