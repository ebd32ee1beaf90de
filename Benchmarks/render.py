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
NAMES = {"uring": "ours, io_uring", "epoll": "ours, epoll", "hummingbird": "Hummingbird WS", "uws": "uWebSockets",
         "uring raw": "ours raw, io_uring", "epoll raw": "ours raw, epoll",
         "uring base": "before, io_uring", "epoll base": "before, epoll",
         "single": "one server", "redis3": "3 servers + Redis"}
UWS = "uws"


def ratio(r):
    return f"{r:.2f}×" if r is not None else "–"


def ours_of(cfg):
    return [s for s in cfg["servers"] if s not in (cfg["peer"], UWS)]


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
    ours = ours_of(cfg)
    peer = cfg["peer"]
    uws = UWS in servers
    head = ["scenario"] + [NAMES.get(s, s) for s in servers] + [f"{NAMES.get(s, s)} / peer" for s in ours if peer in servers]
    head += [f"{NAMES.get(s, s)} / uWS" for s in ours if uws] + ["target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in doc["scenarios"]:
        sid, kind = sc["id"], sc["kind"]
        s = summ.get(sid, {})
        if kind in ("fanout", "cluster", "fairness", "scaling"):  # fairness: Benchmarks/run prints it
            continue
        if kind == "idle":
            row = [sc["label"] + ", RSS per connection (B)"]
            row += [cell(s.get(srv, {}), "rss_per_conn", 0) for srv in servers]
            target = f"≤ {sc['target']:.0f} B"
        else:
            row = [sc["label"] + ", server µs/msg"]
            row += [cell(s.get(srv, {}), "srv_us_per_msg", 2) for srv in servers]
            target = f"≤ {sc['target']:g} µs"
        if peer in servers:
            row += [ratio(s.get(srv, {}).get("ratio_to_peer")) for srv in ours]
        if uws:
            row += [ratio(s.get(srv, {}).get("ratio_to_uws")) for srv in ours]
        row.append(target)
        lines.append("| " + " | ".join(row) + " |")
    # throughput, for the echo scenarios
    echo = [sc for sc in doc["scenarios"] if sc["kind"] == "echo"]
    lines += median_table(summ, servers, echo, "scenario, messages/s (median)", "msgs_per_s", "{:,.0f}", "failed")
    deflate = [sc for sc in echo if sc.get("deflate")]
    if deflate:
        lines += median_table(summ, servers, deflate,
                              "compressed echo: payload bytes on the wire per echo, as the server sent them (median)",
                              "echo_wire_bytes", "{:,.0f} B", "–")
    if not any(sc["kind"] in ("echo", "idle") for sc in doc["scenarios"]):
        lines = []  # a fan-out-only run: no empty echo tables
    lines += fanout_tables(doc)
    lines += before_table(doc)
    lines += scaling_table(doc)
    n = cfg["reps"]
    text = [
        f"Server CPU per echoed message (the server process's utime+stime, all threads, over the measured "
        f"window, divided by messages echoed): median of {n} repetitions, (min–max) in brackets; "
        f"ratio = ours / {NAMES.get(peer, peer)}{' and ours / uWebSockets' if UWS in servers else ''}, below 1 "
        f"is better. Idle: the server's RSS growth per open "
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
        who = "ours, Hummingbird and uWebSockets" if UWS in cfg["servers"] else "ours and Hummingbird"
        out += ["", f"![server CPU per message, {who}]({chart_rel})"]
    return "\n".join(out) + "\n"


def median_table(summ, servers, scenarios, title, metric, form, missing):
    """One row per scenario, one column per server: the metric's median."""
    out = ["", f"| {title} | " + " | ".join(NAMES.get(s, s) for s in servers) + " |",
           "|" + "---|" * (len(servers) + 1)]
    for sc in scenarios:
        s = summ.get(sc["id"], {})
        vals = [form.format(m["median"]) if (m := s.get(srv, {}).get(metric)) else missing for srv in servers]
        out.append(f"| {sc['label']} | " + " | ".join(vals) + " |")
    return out


def fanout_tables(doc):
    """Fan-out: server CPU per delivery side by side, throughput and latency; the Redis cluster against one server."""
    cfg, summ = doc["config"], doc["summary"]
    peer = cfg["peer"]
    raw = [v for v in cfg.get("async_servers", []) if v.endswith(" raw")]
    servers = cfg["servers"] + raw
    ours = ours_of(cfg) + raw
    uws = UWS in servers
    fan = [sc for sc in doc["scenarios"] if sc["kind"] == "fanout"]
    cluster = [sc for sc in doc["scenarios"] if sc["kind"] == "cluster"]
    out = []
    if fan:
        head = ["fan-out, server µs per delivery"] + [NAMES.get(s, s) for s in servers]
        chat = ours_of(cfg)  # the peer runs the chat: raw rows are compared with uWebSockets only
        head += [f"{NAMES.get(s, s)} / peer" for s in chat if peer in servers]
        head += [f"{NAMES.get(s, s)} / uWS" for s in ours if uws] + ["target"]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for sc in fan:
            s = summ.get(sc["id"], {})
            row = [sc["label"]] + [cell(s.get(srv, {}), "srv_us_per_delivery", 3) for srv in servers]
            if peer in servers:
                row += [ratio(s.get(srv, {}).get("ratio_to_peer")) for srv in chat]
            if uws:
                row += [ratio(s.get(srv, {}).get("ratio_to_uws")) for srv in ours]
            row.append(f"≤ {sc['target']:g} µs" if sc.get("target") else "")
            out.append("| " + " | ".join(row) + " |")
        head = ["fan-out (medians)"] + [f"{NAMES.get(s, s)}: deliveries/s, latency p50 / p99 / p99.9 (ms)"
                                        for s in servers]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for sc in fan:
            s = summ.get(sc["id"], {})
            row = [sc["label"]]
            for srv in servers:
                row.append(throughput_cell(s.get(srv, {})))
            out.append("| " + " | ".join(row) + " |")
    for sc in cluster:
        s = summ.get(sc["id"], {})
        head = [sc["label"] + f" ({NAMES.get(cfg.get('cluster_backend', ''), cfg.get('cluster_backend', ''))})",
                "deliveries/s", "latency p50 / p99 / p99.9 (ms)", "server µs/delivery (all servers)",
                "Redis µs/message"]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for v in ("single", "redis3"):
            m = s.get(v, {})
            if not m:
                continue
            dps = m.get("deliveries_per_s")
            lat = "/".join(f"{m[k]['median'] / 1e3:.2f}" if m.get(k) else "–" for k in ("p50_us", "p99_us", "p999_us"))
            aux = m.get("aux_us_per_msg")
            aux_cell = f"{aux['median']:.1f}" if aux else "–"
            out.append(f"| {NAMES[v]} | {cell(m, 'deliveries_per_s', 0) if dps else 'failed'} | {lat} | "
                       f"{cell(m, 'srv_us_per_delivery', 3)} | {aux_cell} |")
        c = s.get("redis3", {}).get("vs_single", {})
        if c:
            out += ["", f"Through Redis: deliveries/s ×{c.get('deliveries_ratio', float('nan')):.2f} of one server's; "
                        f"latency added p50 {c.get('added_p50_us', float('nan')) / 1e3:+.2f} ms, "
                        f"p99 {c.get('added_p99_us', float('nan')) / 1e3:+.2f} ms."]
    if fan or cluster:
        out += ["", f"Fan-out: `wsload fanout`, N subscribers and one publisher in one channel, "
                    f"{cfg.get('fanout_inflight', '?')} `say` messages in flight (a message is done when every "
                    "subscriber has it); server µs per delivery = the server processes' CPU over the window / "
                    "subscriber deliveries; latency = publish to each subscriber's receipt. Every run checks "
                    "sequence numbers per subscriber: lost and duplicated deliveries were 0 unless marked."]
        bad = [(sc["label"], v) for sc in fan + cluster for v, m in summ.get(sc["id"], {}).items()
               if isinstance(m, dict) and ((m.get("lost") or {}).get("max", 0) or (m.get("dup") or {}).get("max", 0))]
        for label, v in bad:
            out.append(f"**{label}, {NAMES.get(v, v)}: lost or duplicated deliveries.**")
    return out


def before_table(doc):
    """Rows of another build of ours (the mode `base`: WSDEMO_BASE) beside this build's, same run."""
    cfg, summ = doc["config"], doc["summary"]
    base = [v for v in cfg.get("async_servers", []) if v.endswith(" base")]
    if not base:
        return []
    head = ["this build / the base build (same run, medians)"] + [NAMES.get(b.split()[0], b.split()[0]) for b in base]
    out = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    key = {"idle": "rss_per_conn", "fanout": "srv_us_per_delivery"}
    for sc in doc["scenarios"]:
        if sc["kind"] not in ("echo", "idle", "fanout"):
            continue
        s = summ.get(sc["id"], {})
        row = [sc["label"]]
        for b in base:
            r = s.get(b, {}).get("ratio_to_sync")  # the base row over this build's
            row.append(ratio(1 / r) if r else "–")
        out.append("| " + " | ".join(row) + " |")
    out += ["", f"Base build: `WSDEMO_BASE={cfg.get('wsdemo_base') or '?'}`; below 1: this build is cheaper "
                "(server CPU per message or delivery; idle: RSS per connection)."]
    return out


def scaling_table(doc):
    cfg, summ = doc["config"], doc["summary"]
    sc = next((sc for sc in doc["scenarios"] if sc["kind"] == "scaling"), None)
    if not sc:
        return []
    s = summ.get(sc["id"], {})
    rows = sorted({k.rsplit(" x", 1) [0] for k in s}, key=lambda b: cfg["servers"].index(b) if b in cfg["servers"] else 99)
    loops = sorted({int(k.rsplit(" x", 1)[1]) for k in s})
    head = [sc["label"] + ": messages/s (server µs/msg)"] + [f"{n} loop{'s' if n > 1 else ''}" for n in loops]
    out = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in rows:
        row = [NAMES.get(b, b)]
        for n in loops:
            m = s.get(f"{b} x{n}", {})
            mp, us = m.get("msgs_per_s"), m.get("srv_us_per_msg")
            row.append(f"{mp['median']:,.0f} ({us['median']:.2f})" if mp and us else "–")
        out.append("| " + " | ".join(row) + " |")
    out += ["", f"Scaling: one `wsload` per loop, started together; on {doc['machine']['cpus']} CPUs the generators "
                "share the cores with the server unless 2N CPUs are there (then the server is on CPUs 0..N-1): "
                "on this machine the curve says little, a bigger one shows it. uWebSockets runs one thread."]
    return out


def throughput_cell(m):
    d = m.get("deliveries_per_s")
    if not d:
        return "failed"
    lat = " / ".join(f"{m[k]['median'] / 1e3:.2f}" if m.get(k) else "–" for k in ("p50_us", "p99_us", "p999_us"))
    return f"{d['median']:,.0f} ({d['min']:,.0f}–{d['max']:,.0f}); {lat}"


def chart(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, summ = doc["config"], doc["summary"]
    servers = cfg["servers"]
    echo = [sc for sc in doc["scenarios"] if sc["kind"] == "echo"]
    idle = [sc for sc in doc["scenarios"] if sc["kind"] == "idle"]
    fan = [sc for sc in doc["scenarios"] if sc["kind"] == "fanout"]
    # (scenarios, metric, y label, title, log scale, width)
    panels = [p for p in (
        (echo, "srv_us_per_msg", "server CPU µs per message (log)", "echo: server CPU per message, lower is better",
         True, max(len(echo), 1)),
        (idle, "rss_per_conn", "server RSS bytes per connection", "idle memory", False, 1),
        (fan, "srv_us_per_delivery", "server CPU µs per delivery", "fan-out: CPU per delivery", False,
         max(len(fan), 1)),
    ) if p[0]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3 + 1.5 * sum(p[5] for p in panels), 4.8),
                             gridspec_kw={"width_ratios": [p[5] for p in panels]})
    axes = list(axes) if len(panels) > 1 else [axes]
    colors = {"uring": "#1f77b4", "epoll": "#6baed6", "hummingbird": "#ff7f0e", "uws": "#2ca02c"}
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
                                          .replace("fan-out ", "").replace(",", ""), 13) for sc in scs], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)

    for ax, (scs, key, ylabel, title, log, _) in zip(axes, panels):
        bars(ax, scs, key, ylabel, title, log=log)
    axes[0].legend(fontsize=8)
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
