"""Charts of the benchmarks' figures, rendered into docs/assets with matplotlib (not a test).

The benches call these when asked (``--charts``, or the environment variable
``BENCH_CHARTS=1``, which ``make bench`` passes on with ``make bench CHARTS=1``); each
chart carries the date of its figures in its title. Without matplotlib (it is in
requirements-dev.txt, not a dependency of the packages) :func:`unavailable` says why and
the benches print it and go on.

Run alone, ``python bench/charts.py fanout FILE.json`` renders the fan-out chart from a
JSON file of rows ``{"date": ..., "rows": [{"n", "kind", "all", "p50", "p99"}, ...]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "docs" / "assets"


def unavailable() -> str | None:
    """Why charts cannot be rendered here, or None if they can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install -r requirements-dev.txt): no charts"
    return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True})
    return plt


def _save(plt: Any, fig: Any, name: str) -> Path:
    ASSETS.mkdir(parents=True, exist_ok=True)
    path = ASSETS / name
    fig.tight_layout()
    # no software version in the file: a re-render of the same figures is the same file
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    print(f"chart: {path.relative_to(ASSETS.parents[1])}")
    return path


def _plain_ticks(ax: Any) -> None:
    """Log axes labelled 0.1, 1, 10 rather than 10^-1, 10^0, 10^1."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def render_scale(figures: dict[str, Any]) -> list[Path]:
    """bench_scale's charts: bytes per node against cluster size; catch-up against presences."""
    reason = unavailable()
    if reason:
        print(f"charts: {reason}")
        return []
    plt = _pyplot()
    date = figures["date"]
    paths = []
    table = figures["formula_table"]
    nodes = [row["nodes"] for row in table]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(
        nodes,
        [row["tracker_bytes_per_s"] / 1e6 for row in table],
        marker="o",
        label="tracker heartbeats (formula)",
    )
    ax.plot(
        nodes,
        [(row["wire_bytes_per_s"] + row["gossip_bytes_per_s"]) / 1e6 for row in table],
        marker="s",
        label="+ PubSub frame headers and gossip (formula)",
    )
    sim_table = figures.get("formula_table_sim") or []
    if sim_table:
        ax.plot(
            [row["nodes"] for row in sim_table],
            [row["tracker_bytes_per_s"] / 1e6 for row in sim_table],
            linestyle="--",
            color="gray",
            label="tracker heartbeats (formula, the simulator's short vsns)",
        )
    for sim, marker in zip(figures["simulated"], ("x", "+", "*", "D"), strict=False):
        ax.scatter(
            [sim["nodes"]],
            [sim["sent_per_s"] / 1e6],
            marker=marker,
            s=60,
            color="black",
            zorder=3,
            label=f"simulated, {sim['presences']:,} presences",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes (full mesh)")
    ax.set_ylabel("MB/s each node sends (and receives)")
    churn = figures.get("churn", 1000)
    ax.set_title(f"Bytes per node, {churn:,.0f} tracks/s cluster-wide, period 1.5 s ({date})")
    _plain_ticks(ax)
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, "scale-bytes-per-node.png"))

    rows = figures["catchup"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = [row["presences"] for row in rows]
    ax.plot(xs, [row["new_s"] for row in rows], marker="o", label="new node: decode + merge")
    ax.plot(xs, [row["holder_s"] for row in rows], marker="s", label="holder: extract + encode")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("presences transferred")
    ax.set_ylabel("CPU seconds")
    ax.set_title(f"Full-state transfer CPU against presences, one process ({date})")
    _plain_ticks(ax)
    ax.legend(fontsize=8)
    paths.append(_save(plt, fig, "scale-catchup.png"))
    return paths


def render_fanout(rows: list[dict[str, Any]], date: str) -> list[Path]:
    """bench_channels' fan-out: time until the last socket had a broadcast, against N."""
    reason = unavailable()
    if reason:
        print(f"charts: {reason}")
        return []
    plt = _pyplot()
    ASSETS.mkdir(parents=True, exist_ok=True)
    keep = ("n", "kind", "p50", "p99", "all")
    (ASSETS / "channels-fanout.json").write_text(
        json.dumps({"date": date, "rows": [{k: r[k] for k in keep} for r in rows]}, indent=1) + "\n"
    )
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for kind, label, marker in (
        ("plain", "websockets.broadcast (floor)", "s"),
        ("endpoint", "Endpoint (channels)", "o"),
    ):
        series = sorted((r["n"], r["all"], r["p50"]) for r in rows if r["kind"] == kind)
        if not series:
            continue
        xs = [s[0] for s in series]
        line = ax.plot(xs, [s[1] for s in series], marker=marker, label=f"{label}: last socket")
        ax.plot(
            xs,
            [s[2] for s in series],
            marker=marker,
            linestyle=":",
            color=line[0].get_color(),
            label=f"{label}: p50",
        )
    ax.set_xlabel("sockets joined to the topic (one node)")
    ax.set_ylabel("ms from broadcast to receipt")
    ax.set_title(f"Channels fan-out time against sockets ({date})")
    ax.legend(fontsize=8)
    return [_save(plt, fig, "channels-fanout.png")]


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] != "fanout":
        print(__doc__)
        return 2
    data = json.loads(Path(sys.argv[2]).read_text())
    render_fanout(data["rows"], data["date"])  # writes docs/assets/channels-fanout.json too
    return 0


if __name__ == "__main__":
    sys.exit(main())
