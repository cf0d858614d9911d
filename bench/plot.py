#!/usr/bin/env python3
"""Plots docs/bench/results.json (written by `wsbench matrix`) to a PNG.

Left: saturated fan-out deliveries/s by subscriber count, raw and envelope,
wsgate vs the reference relay (median of the rounds, min-max as error bars).
Right: feed-to-subscriber latency percentiles at 5 000 msg/s x 100 subscribers.

usage: plot.py results.json throughput.png
"""
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        r = json.load(f)
    subs = [1, 10, 100]
    series = [
        ("wsgate", "raw", "#1f77b4", None),
        ("reference", "raw", "#aec7e8", None),
        ("wsgate", "envelope", "#d62728", "//"),
        ("reference", "envelope", "#ff9896", "//"),
    ]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.2
    for i, (target, fmt, color, hatch) in enumerate(series):
        meds, lo, hi = [], [], []
        for n in subs:
            xs = [
                run["swarm"]["deliveries_per_s"]
                for run in r.get("throughput", [])
                if run["target"] == target and run["format"] == fmt and run["subscribers"] == n
            ]
            m = statistics.median(xs) if xs else 0
            meds.append(m)
            lo.append(m - min(xs) if xs else 0)
            hi.append(max(xs) - m if xs else 0)
        pos = [k + (i - 1.5) * width for k in range(len(subs))]
        bars = ax.bar(pos, meds, width, yerr=[lo, hi], capsize=3, label=f"{target} {fmt}", color=color,
                      hatch=hatch, edgecolor="black", linewidth=0.5)
        for b, m in zip(bars, meds):
            ax.annotate(f"{m / 1000:.0f}k", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(subs)))
    ax.set_xticklabels([f"{n} subscriber{'s' if n > 1 else ''}" for n in subs])
    ax.set_ylabel("deliveries / s (all subscribers)")
    ax.set_title("Saturated fan-out, ~200-byte JSON, loopback, 2 cores")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    labels = ["p50", "p99", "p99.9"]
    keys = ["lat_us_p50", "lat_us_p99", "lat_us_p999"]
    lat = {(run["target"], run["format"]): run["swarm"] for run in r.get("latency", [])}
    for i, (target, fmt, color, hatch) in enumerate(series):
        s = lat.get((target, fmt))
        if not s:
            continue
        vals = [max(s[k], 1) / 1000.0 for k in keys]
        pos = [k + (i - 1.5) * width for k in range(len(labels))]
        ax2.bar(pos, vals, width, label=f"{target} {fmt}", color=color, hatch=hatch, edgecolor="black",
                linewidth=0.5)
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(labels)))
    ax2.set_xticklabels(labels)
    ax2.set_ylabel("feed → subscriber latency, ms (log)")
    ax2.set_title("5 000 msg/s x 100 subscribers")
    ax2.grid(axis="y", alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    fig.suptitle(f"wsgate vs reference relay — {r.get('started', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
