"""Plot a benchmark result: deliveries per server CPU-second and fan-out p99 latency per
target (``docs/bench.png``), and, where the run has the room-size sweep, the scale curves:
fan-out p50/p99 and deliveries per CPU-second against room size, one line per target
(``docs/bench-scale.png``).

Example::

    bench/.venv-peers/bin/python bench/plot.py                  # latest.json -> docs/*.png
    bench/.venv-peers/bin/python bench/plot.py results.json -o out.png --scale-out scale.png

Needs matplotlib (bench/requirements.txt, installed into bench/.venv-peers by bench/setup).
"""

from __future__ import annotations

import argparse
import json
import textwrap
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
    if name == "collab":
        return COLLAB
    if name.startswith("collab"):
        return "#e39aa4" if "baseline" not in name else "#a0522d"
    if name.startswith("echo-"):
        return LIMIT
    if name.startswith("ywebsocket"):
        return "#2a9d8f"
    if name.startswith("pycrdt"):
        return "#8d6a9f"
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
    p.add_argument("--scale-out", type=Path, default=BENCH.parent / "docs" / "bench-scale.png")
    args = p.parse_args(argv)
    doc = json.loads(args.result.read_text())
    meta, summary = doc["meta"], doc["summary"]
    labels = {name: t["label"] for name, t in meta["targets"].items()}
    sweep = meta["sizes"]["fanout_clients"]
    big = 64 if 64 in sweep else max(sweep)

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
    bars(axes[0], tput, "Deliveries per server CPU-s, scenario 2 (higher is better)", "{:,.0f}")
    bars(axes[1], p99, f"Fan-out p99, {big} clients, ms (lower is better)", "{:.2f}")
    m = meta["machine"]
    caption = (
        f"medians of {meta['runs']} runs, {meta['date'][:10]}; {m['cores']} cores, {m['cpu']}\n"
        + textwrap.fill(meta["command"], 160)
    )
    fig.suptitle(f"collab vs peers, {caption}", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    if len(sweep) > 2:
        scale(summary, labels, sweep, caption, args.scale_out)
    return 0


def scale(
    summary: dict[str, Any], labels: dict[str, str], sweep: list[int], caption: str, out: Path
) -> None:
    """The room-size sweep: one line per target, room size on a log axis."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    panels = [
        ("fanout_{n}_p50_ms", "Fan-out p50, ms (lower is better)"),
        ("fanout_{n}_p99_ms", "Fan-out p99, ms (lower is better)"),
        ("fanout_{n}_deliveries_per_cpu_s", "Deliveries per server CPU-s (higher is better)"),
    ]
    styles = ["-", "--", "-.", ":"]
    for ax, (key, title) in zip(axes, panels, strict=True):
        peers = 0
        for name, s in summary.items():
            if name.startswith("echo-") or "baseline" in name or "secure" in name:
                continue  # the stacks and the peers; before/after and costs are in tables
            points = [(n, s.get(key.format(n=n))) for n in sweep]
            points = [(n, v) for n, v in points if isinstance(v, int | float)]
            if len(points) < 2:
                continue
            style = styles[peers % len(styles)]
            peers += 1
            ax.plot(
                [n for n, _ in points],
                [v for _, v in points],
                style,
                marker="o",
                color=color(name),
                alpha=1.0 if name == "collab" else 0.75,
                linewidth=2.4 if name == "collab" else 1.4,
                label=labels.get(name, name),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sweep)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.0f}"))
        if "ms" in title:
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
        ax.set_xlabel("clients in the room (one writer, 100 updates/s)")
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Room-size sweep, {caption}", fontsize=9)
    fig.subplots_adjust(top=0.8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
