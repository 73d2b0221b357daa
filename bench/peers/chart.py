"""The chart of ``bench/results/compare.json`` (run in the peers' venv, which has matplotlib).

    python chart.py compare.json compare.png

Three panels, one bar per system (log scales: the values span three orders of
magnitude): single enqueue jobs/s, drain jobs/s with 2 worker processes, and idle
enqueue-to-start latency (bar: p50, tick: p99). Spoolhouse's bars are coloured,
the peers' grey; SQLite/file-based systems are above the line, Redis-based below.
"""

from __future__ import annotations

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SPOOLHOUSE = "#d9822b"
PEER = "#7f8c99"
P99 = "#2c3e50"


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as f:
        data = json.load(f)
    systems = data["systems"]
    local = [k for k, s in systems.items() if s["store"] != "redis"]
    remote = [k for k, s in systems.items() if s["store"] == "redis"]
    local.sort(key=lambda k: (not k.startswith("spoolhouse"), k))
    remote.sort(key=lambda k: (not k.startswith("spoolhouse"), k))
    order = local + remote
    labels = [systems[k]["label"].replace(" (", "\n(").replace("commit, ", "commit,\n")
              .replace("trip (", "trip\n(")
              + ("" if systems[k]["store"] != "files" else "\n(spool files)") for k in order]
    y = list(range(len(order)))[::-1]  # first system at the top
    colors = [SPOOLHOUSE if k.startswith("spoolhouse") else PEER for k in order]

    fig, axes = plt.subplots(1, 3, figsize=(15, 0.55 * len(order) + 2.4), sharey=True)
    panels = [
        ("single_per_s", "Enqueue, one call per job\n(jobs/s, higher is better)"),
        ("drain_per_s", "Drain with 2 worker processes\n(jobs/s, higher is better)"),
        ("latency_p50_ms", "Idle enqueue → start latency\n(ms, bar p50, tick p99; lower is better)"),
    ]
    for ax, (metric, title) in zip(axes, panels, strict=True):
        values = [systems[k]["median"].get(metric) for k in order]
        present = [v for v in values if v]
        ax.set_xscale("log")
        ax.set_title(title, fontsize=11)
        ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
        if not present:
            continue
        low = min(present)
        high = max(present)
        if metric == "latency_p50_ms":
            p99 = [systems[k]["median"].get("latency_p99_ms") for k in order]
            high = max([high] + [v for v in p99 if v])
        left = 10 ** math.floor(math.log10(low) - 0.3)
        ax.set_xlim(left, high * 8)
        for yi, value, color in zip(y, values, colors, strict=True):
            if not value:
                key = order[y.index(yi)]
                # a limit's note explains it in the JSON; in a panel it would run over the next
                note = ("not a job system" if key.startswith("limit")
                        else systems[key].get("note") or "not measured")
                ax.text(left * 1.2, yi, note, va="center", fontsize=8, color="#888888")
                continue
            ax.barh(yi, value - left, left=left, color=color, height=0.62)
            text = number(value)
            if metric == "latency_p50_ms":
                tick = systems[order[y.index(yi)]]["median"].get("latency_p99_ms")
                if tick:
                    ax.plot([tick, tick], [yi - 0.31, yi + 0.31], color=P99, linewidth=2)
                    text += f" / {number(tick)}"
                    value = max(value, tick)
            ax.text(value * 1.12, yi, text, va="center", fontsize=8.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: number(v)))
        if local and remote:
            ax.axhline(len(remote) - 0.5, color="#444444", linewidth=0.8, linestyle="--")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(labels, fontsize=9.5)
    m = data["machine"]
    rounds = max((len(s["runs"]["latency"]) for s in systems.values()), default=0)
    fig.suptitle(
        f"Spoolhouse and its peers, no-op jobs — {m['cpu']}, {m['cores']} cores, Python "
        f"{m['python']}, SQLite {m['sqlite']}, Redis {m['redis_server']} — medians of "
        f"{rounds} round(s), {data['date']}",
        fontsize=11,
    )
    fig.text(0.01, 0.01, "Above the dashed line: one machine (SQLite file or spool directory); "
             "below: Redis on 127.0.0.1. Log scales.", fontsize=8.5, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
