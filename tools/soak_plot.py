#!/usr/bin/env python3
"""Plot `mdmd sim soak` samples (one JSON object per line) into one PNG.

Usage: soak_plot.py SAMPLES.jsonl OUT.png [TITLE]

Panels: server RSS, open files, store size on disk, device request latency
(p50, p99), server CPU and requests per interval, commands answered. Dashed
lines mark a new ACME certificate; dotted lines an identity renewal wave.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst, title=None):
    rows = [json.loads(l) for l in open(src) if l.strip()]
    if not rows:
        sys.exit(f"{src}: no samples")
    t = [r["t"] / 60 for r in rows]
    interval = (rows[1]["t"] - rows[0]["t"]) if len(rows) > 1 else rows[0]["t"] or 60

    def col(k, scale=1.0):
        return [(r.get(k) if r.get(k) is not None else float("nan")) * scale for r in rows]

    acme, renew = [], []
    for a, b in zip(rows, rows[1:]):
        if a.get("acme_serial") and b.get("acme_serial") and a["acme_serial"] != b["acme_serial"]:
            acme.append(b["t"] / 60)
        if b["identity_renewals"] - a["identity_renewals"] > 0:
            renew.append(b["t"] / 60)

    fig, ax = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    panels = [
        (ax[0][0], "server RSS (MiB)", [
            ("RSS", col("rss_kib", 1 / 1024)),
            ("RSS minus the store on disk", [a - b for a, b in zip(col("rss_kib", 1 / 1024), col("store_bytes", 1 / 2**20))]),
        ]),
        (ax[0][1], "open files", [("fds", col("open_files"))]),
        (ax[1][0], "store on disk (MiB)", [("redb", col("store_bytes", 1 / 2**20))]),
        (ax[1][1], "device request latency (ms)", [("p99, devices", col("p99_ms")), ("p50, devices", col("p50_ms")), ("p99, server (bucket bound)", col("server_p99_ms_le"))]),
        (ax[2][0], "server CPU (% of one core)", [("CPU", [c * 100 / interval for c in col("server_cpu_s")])]),
        (ax[2][1], "totals", [("commands answered", col("commands_answered")), ("identity renewals", col("identity_renewals"))]),
    ]
    for a, heading, series in panels:
        for label, ys in series:
            a.plot(t, ys, marker=".", label=label)
        a.set_title(heading)
        a.set_ylim(bottom=0)
        a.grid(alpha=0.3)
        for x in acme:
            a.axvline(x, color="tab:red", linestyle="--", alpha=0.6)
        for x in renew:
            a.axvline(x, color="tab:green", linestyle=":", alpha=0.6)
        if len(series) > 1:
            a.legend(loc="upper left")
    rq = ax[2][0].twinx()
    rq.plot(t, col("requests"), color="tab:gray", alpha=0.5, label="requests")
    rq.set_ylabel("requests per interval")
    rq.set_ylim(bottom=0)
    for a in ax[2]:
        a.set_xlabel("minutes (dashed: new ACME certificate; dotted: identity renewals)")
    fig.suptitle(title or f"mdmd soak: {len(rows)} samples")
    fig.tight_layout()
    fig.savefig(dst, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
