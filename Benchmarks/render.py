#!/usr/bin/env python3
"""Render a Benchmarks/run result (JSON) as the README's markdown table and a chart.

    python3 Benchmarks/render.py                              # latest.json -> results/latest.md, results/latest.png
    python3 Benchmarks/render.py --readme README.md           # also fill README between the bench markers
    python3 Benchmarks/render.py --json other.json --no-chart

The README section is replaced between `<!-- bench:begin -->` and
`<!-- bench:end -->` (both must be present; nothing else is touched). Every
number comes from the JSON: nothing here is typed by hand. The chart needs
matplotlib (`pip install matplotlib`).
"""
import argparse
import json
import os
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NAMES = {"uring": "ours, io_uring", "epoll": "ours, epoll", "hummingbird": "Hummingbird WS"}


def cell(s, key, unit_digits):
    m = s.get(key)
    if not m:
        return "failed"
    d = unit_digits
    if m["min"] == m["max"]:
        return f"{m['median']:.{d}f}"
    return f"{m['median']:.{d}f} ({m['min']:.{d}f}–{m['max']:.{d}f})"


def markdown(doc, chart_rel):
    cfg, mach, summ = doc["config"], doc["machine"], doc["summary"]
    servers = cfg["servers"]
    ours = [s for s in servers if s != cfg["peer"]]
    peer = cfg["peer"]
    head = ["scenario"] + [NAMES.get(s, s) for s in servers] + [f"{NAMES.get(s, s)} / peer" for s in ours] + ["target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in doc["scenarios"]:
        sid, kind = sc["id"], sc["kind"]
        s = summ.get(sid, {})
        if kind == "idle":
            row = [sc["label"] + ", RSS per connection (B)"]
            row += [cell(s.get(srv, {}), "rss_per_conn", 0) for srv in servers]
            target = f"≤ {sc['target']:.0f} B"
        else:
            row = [sc["label"] + ", server µs/msg"]
            row += [cell(s.get(srv, {}), "srv_us_per_msg", 2) for srv in servers]
            target = f"≤ {sc['target']:g} µs"
        for srv in ours:
            r = s.get(srv, {}).get("ratio_to_peer")
            row.append(f"{r:.2f}×" if r is not None else "–")
        row.append(target)
        lines.append("| " + " | ".join(row) + " |")
    # throughput, for the echo scenarios
    lines += ["", "| scenario, messages/s (median) | " + " | ".join(NAMES.get(s, s) for s in servers) + " |",
              "|" + "---|" * (len(servers) + 1)]
    for sc in doc["scenarios"]:
        if sc["kind"] != "echo":
            continue
        s = summ.get(sc["id"], {})
        vals = []
        for srv in servers:
            m = s.get(srv, {}).get("msgs_per_s")
            vals.append(f"{m['median']:,.0f}" if m else "failed")
        lines.append(f"| {sc['label']} | " + " | ".join(vals) + " |")
    n = cfg["reps"]
    text = [
        f"Server CPU per echoed message (the server process's utime+stime, all threads, over the measured "
        f"window, divided by messages echoed): median of {n} repetitions, (min–max) in brackets; "
        f"ratio = ours / {NAMES.get(peer, peer)}, below 1 is better. Idle: the server's RSS growth per open "
        f"connection. Each server runs with one event loop pinned to CPU{cfg['server_cpu']}, "
        f"the load generator (`wsload`, one message in flight per connection unless stated) on "
        f"CPU{cfg['client_cpu']}; {cfg['duration_s']:g} s measured after {cfg['warmup_s']:g} s warm-up"
        f"{', both SCHED_FIFO' if cfg['rt'] else ''}.",
        "",
        f"Machine: {mach['cpus']} vCPU {mach['model']}, Linux {mach['kernel']}, a shared VM (load average "
        f"{mach['load_before']} before, {mach['load_after']} after): absolute figures are noisy, the ratios "
        f"were measured side by side in the same run. Run {doc['date']} with `{doc['command']}`, "
        f"then `python3 Benchmarks/render.py --readme README.md`.",
        "",
    ]
    out = text + lines
    if chart_rel:
        out += ["", f"![server CPU per message, ours and Hummingbird]({chart_rel})"]
    return "\n".join(out) + "\n"


def chart(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, summ = doc["config"], doc["summary"]
    servers = cfg["servers"]
    echo = [sc for sc in doc["scenarios"] if sc["kind"] == "echo"]
    idle = [sc for sc in doc["scenarios"] if sc["kind"] == "idle"]
    fig, axes = plt.subplots(1, 2 if idle else 1, figsize=(12 if idle else 9, 4.8),
                             gridspec_kw={"width_ratios": [4, 1]} if idle else None)
    axes = axes if idle else [axes]
    colors = {"uring": "#1f77b4", "epoll": "#6baed6", "hummingbird": "#ff7f0e"}
    width = 0.8 / len(servers)

    def bars(ax, scs, key, ylabel, title, log=True):
        for i, srv in enumerate(servers):
            med, lo, hi = [], [], []
            for sc in scs:
                m = summ.get(sc["id"], {}).get(srv, {}).get(key)
                med.append(m["median"] if m else 0)
                lo.append(m["median"] - m["min"] if m else 0)
                hi.append(m["max"] - m["median"] if m else 0)
            xs = [x + (i - (len(servers) - 1) / 2) * width for x in range(len(scs))]
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=NAMES.get(srv, srv), color=colors.get(srv))
        ax.set_xticks(range(len(scs)))
        ax.set_xticklabels([textwrap.fill(sc["label"].replace("deflate echo", "deflate").replace("echo ", "")
                                          .replace(",", ""), 13) for sc in scs], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)

    bars(axes[0], echo, "srv_us_per_msg", "server CPU µs per message (log)", "echo: server CPU per message, lower is better")
    axes[0].legend(fontsize=8)
    if idle:
        bars(axes[1], idle, "rss_per_conn", "server RSS bytes per connection", "idle memory", log=False)
    mach = doc["machine"]
    fig.suptitle(f"{doc['date']}, {mach['cpus']} vCPU {mach['model']}; median of {cfg['reps']}, bars = min–max",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fill_readme(path, block):
    with open(path) as f:
        text = f.read()
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < 0 or e < b:
        sys.exit(f"render: {path} has no {BEGIN} ... {END} markers")
    text = text[: b + len(BEGIN)] + "\n" + block + text[e:]
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--md", default=None, help="markdown output (default: next to the JSON, .md)")
    ap.add_argument("--png", default=None, help="chart output (default: next to the JSON, .png)")
    ap.add_argument("--readme", default=None, help="README to fill between the bench markers")
    ap.add_argument("--no-chart", action="store_true")
    a = ap.parse_args()
    with open(a.json) as f:
        doc = json.load(f)
    base = os.path.splitext(a.json)[0]
    md, png = a.md or base + ".md", a.png or base + ".png"
    chart_rel = None
    if not a.no_chart:
        chart(doc, png)
        rel_to = os.path.dirname(os.path.abspath(a.readme)) if a.readme else os.path.dirname(os.path.abspath(md))
        chart_rel = os.path.relpath(os.path.abspath(png), rel_to)
        print(f"wrote {png}")
    block = markdown(doc, chart_rel)
    with open(md, "w") as f:
        f.write(block)
    print(f"wrote {md}")
    if a.readme:
        fill_readme(a.readme, block)
        print(f"filled {a.readme}")


if __name__ == "__main__":
    main()
