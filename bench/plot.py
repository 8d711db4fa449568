"""Plot a benchmark result: deliveries per server CPU-second and fan-out p99 latency per target.

Example::

    bench/.venv-peers/bin/python bench/plot.py                      # latest.json -> docs/bench.png
    bench/.venv-peers/bin/python bench/plot.py results.json -o out.png

Needs matplotlib (bench/requirements.txt, installed into bench/.venv-peers by bench/setup).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parent
COLLAB = "#d1495b"
PEER = "#5b7fa6"
LIMIT = "#9aa5b1"


def color(name: str) -> str:
    if name.startswith("collab"):
        return COLLAB
    if name.startswith("echo-"):
        return LIMIT
    return PEER


def bars(ax: Any, rows: list[tuple[str, str, float]], title: str, fmt: str) -> None:
    rows = rows[::-1]  # first target on top
    labels = [label for _, label, _ in rows]
    values = [v for _, _, v in rows]
    ax.barh(labels, values, color=[color(name) for name, _, _ in rows])
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for i, v in enumerate(values):
        ax.text(v, i, " " + fmt.format(v), va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.25 if values else 1)
    ax.tick_params(axis="y", labelsize=9)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))  # labels must not touch
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("result", nargs="?", type=Path, default=BENCH / "results" / "latest.json")
    p.add_argument("-o", "--out", type=Path, default=BENCH.parent / "docs" / "bench.png")
    args = p.parse_args(argv)
    doc = json.loads(args.result.read_text())
    meta, summary = doc["meta"], doc["summary"]
    labels = {name: t["label"] for name, t in meta["targets"].items()}
    big = max(meta["sizes"]["fanout_clients"])

    tput = [
        (n, labels[n], s["deliveries_per_cpu_s"])
        for n, s in summary.items()
        if s.get("deliveries_per_cpu_s") is not None
    ]
    p99 = [
        (n, labels[n], s[f"fanout_{big}_p99_ms"])
        for n, s in summary.items()
        if s.get(f"fanout_{big}_p99_ms") is not None
    ]

    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * max(len(tput), len(p99), 4) + 1.8))
    bars(axes[0], tput, "Deliveries per server CPU-s (scenario 2, higher is better)", "{:,.0f}")
    bars(axes[1], p99, f"Fan-out p99, {big} clients, ms (scenario 1, lower is better)", "{:.2f}")
    m = meta["machine"]
    fig.suptitle(
        f"collab vs peers, medians of {meta['runs']} runs, {meta['date'][:10]}; "
        f"{m['cores']} cores, {m['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
