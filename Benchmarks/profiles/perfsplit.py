#!/usr/bin/env python3
"""Splits a `perf record -g` profile of wsdemo into cost centres.

    perfsplit.py PERF_DATA [--us-per-unit X] [--top N] [--json OUT]

Reads `perf script` (leaf frame + call chain of every sample) and classifies
each sample by its leaf frame:

  kernel            leaf in the kernel; further split by the syscall it runs
                    under (sendmsg, recvfrom, epoll_wait, io_uring_enter, ...)
                    and whether it runs inside a softirq (on loopback the
                    sender's write runs the receiver's TCP input there)
  C engine          wsdemo's C symbols (cws_*, static helpers) and liburing
  Swift service     Swift code linked into wsdemo (WebSocketService, wsdemo,
                    swift-log, ...: mangled $s names)
  Swift runtime     libswiftCore, libswift_*, Foundation, dispatch
  allocator         malloc/free and friends in libc
  libc other        memcpy, syscall wrappers, pthread locks, ...

and, from the call chains, the share of samples under a few inclusive
markers (the Swift on_message hop, the flush, the loop's wait).
--us-per-unit turns shares into µs per message (give the run's server µs/msg).
"""
import collections
import json
import re
import subprocess
import sys

ALLOC = re.compile(r"^(malloc|free|cfree|calloc|realloc|_int_malloc|_int_free|_int_free_merge_chunk|_int_free_create_chunk|"
                   r"_int_free_maybe_consolidate|_int_realloc|malloc_consolidate|tcache_\w+|__libc_malloc|__libc_free|"
                   r"__libc_calloc|__libc_realloc|unlink_chunk|sysmalloc|malloc_usable_size|posix_memalign|"
                   r"_mid_memalign|__posix_memalign|aligned_alloc|_int_memalign|arena_get2|__malloc_\w+)(\.\w+)?$")
SWIFT_RT = ("libswiftCore", "libswift_", "libFoundation", "libdispatch", "libswiftSynchronization", "libswiftDispatch",
            "libswiftGlibc", "libBlocksRuntime")
SOFTIRQ = {"net_rx_action", "__do_softirq", "handle_softirqs", "do_softirq", "__local_bh_enable_ip", "do_softirq_own_stack",
           "irq_exit_rcu", "__irq_exit_rcu"}
SYSCALL = re.compile(r"^(?:__x64_sys_|__se_sys_|__do_sys_|__ia32_sys_|ksys_)(\w+?)(?:\.\w+)?$")
# Inclusive markers: (label, regex over any frame of the chain).
MARKERS = [
    ("on_message: Swift callback (incl. what it calls)", re.compile(r"^\$s.*(received|on_message)|closure.*Service.*init")),
    ("cws_conn_input (parse + deliver + queue)", re.compile(r"^cws_conn_input$")),
    ("cws_conn_deliver (into Swift)", re.compile(r"^cws_conn_deliver$")),
    ("Service.send / cws_send (frame the echo)", re.compile(r"^cws_send$")),
    ("cws_msg_frame (alloc + copy)", re.compile(r"^cws_msg_frame(_rsv)?$")),
    ("cws_loop_turn (flush)", re.compile(r"^cws_loop_turn$")),
    ("conn_flush (writev/sendmsg)", re.compile(r"^cws_(ep|ur)_\w*flush\w*$|^cws_ur_send\w*$")),
    ("epoll_wait / io_uring wait (syscall)", re.compile(r"^(__x64_sys_epoll_wait|__x64_sys_io_uring_enter)$")),
    ("tcp_sendmsg (kernel)", re.compile(r"^tcp_sendmsg$")),
    ("tcp_recvmsg (kernel)", re.compile(r"^tcp_recvmsg$")),
    ("softirq net_rx_action (loopback delivery)", re.compile(r"^net_rx_action$")),
    ("malloc/free (anywhere)", ALLOC),
    ("swift_retain/release", re.compile(r"^swift_(retain|release|bridgeObjectRetain|bridgeObjectRelease|unknownObject\w+)$")),
]


def syscall_name(frame):
    """__sys_sendmsg, __x64_sys_recvfrom, __do_sys_io_uring_enter, ksys_read -> sendmsg, recvfrom, ..."""
    n = re.sub(r"\.(part|isra|constprop)\.\d+$", "", frame)
    n = re.sub(r"^_*(x64_sys_|se_sys_|do_sys_|sys_|ksys_|ia32_sys_)", "", n)
    return n


def is_kernel(dso, sym):
    return dso.startswith("[kernel") or dso in ("[unknown]",) and sym.startswith(("entry_", "__x64", "do_"))


def classify_leaf(dso, sym):
    base = dso.rsplit("/", 1)[-1]
    if dso.startswith("[kernel") or base.startswith("[kernel"):
        return "kernel"
    if base.startswith("liburing"):
        return "C engine"
    if base.startswith("wsdemo"):
        if sym.startswith(("$s", "_$s")) or "$s" in sym[:4]:
            return "Swift service"
        return "C engine"
    if base.startswith(SWIFT_RT):
        return "Swift runtime"
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "allocator" if ALLOC.match(sym) else "libc other"
    if base.startswith(("libz.", "libm.", "libstdc++", "libhiredis")):
        return "other libs"
    if base == "[vdso]":
        return "libc other"
    return "other (" + base + ")"


def parse(data):
    p = subprocess.Popen(["perf", "script", "-i", data, "-F", "comm,tid,period,ip,sym,dso", "--no-inline"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    sample = None
    frame = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
    for line in p.stdout:
        if not line.strip():
            if sample:
                yield sample
            sample = None
            continue
        if not line.startswith((" ", "\t")):
            if sample:
                yield sample
            parts = line.split()
            period = 1
            for tok in parts:
                if tok.isdigit() and len(tok) > 3:
                    period = int(tok)
            sample = {"head": line.strip(), "period": period, "frames": []}
            continue
        m = frame.match(line)
        if m and sample is not None:
            sym = m.group(2)
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            sample["frames"].append((sym, m.group(3)))
    if sample:
        yield sample
    p.wait()


def main():
    args = sys.argv[1:]
    data = args[0]
    us = None
    top = 25
    out = None
    i = 1
    while i < len(args):
        if args[i] == "--us-per-unit":
            us = float(args[i + 1]); i += 2
        elif args[i] == "--top":
            top = int(args[i + 1]); i += 2
        elif args[i] == "--json":
            out = args[i + 1]; i += 2
        else:
            sys.exit("perfsplit: unknown argument " + args[i])
    cats = collections.Counter()
    ksplit = collections.Counter()
    syms = collections.Counter()
    marks = collections.Counter()
    threads = collections.Counter()
    total = 0
    for s in parse(data):
        if not s["frames"]:
            continue
        w = s["period"]
        total += w
        sym, dso = s["frames"][0]
        cat = classify_leaf(dso, sym)
        cats[cat] += w
        threads[s["head"].split()[0]] += w
        syms[(cat, sym, dso.rsplit("/", 1)[-1])] += w
        names = [f[0] for f in s["frames"]]
        if cat == "kernel":
            sc = "no syscall (irq, timer, page fault)"
            if "do_syscall_64" in names:
                k = names.index("do_syscall_64")
                if k > 0:
                    sc = syscall_name(names[k - 1])
            elif "asm_exc_page_fault" in names:
                sc = "page fault"
            soft = any(n in SOFTIRQ for n in names)
            ksplit[(sc, "softirq" if soft else "process")] += w
        for label, rx in MARKERS:
            if any(rx.search(n) for n in names):
                marks[label] += w
    if not total:
        sys.exit("perfsplit: no samples")

    def fmt(w):
        pct = 100.0 * w / total
        return f"{pct:.1f}%" + (f" | {us * w / total:.2f}" if us else "")

    print(f"samples weight {total}  (µs figures = share × {us} µs/msg)" if us else f"samples weight {total}")
    print("\n| cost centre (leaf frame) | share" + (" | µs/msg |" if us else " |"))
    print("|---|---|" + ("---|" if us else ""))
    for cat, w in cats.most_common():
        print(f"| {cat} | " + fmt(w) + " |")
    print("\n| kernel time by syscall | context | share" + (" | µs/msg |" if us else " |"))
    print("|---|---|---|" + ("---|" if us else ""))
    for (sc, ctx), w in ksplit.most_common(12):
        print(f"| {sc} | {ctx} | " + fmt(w) + " |")
    print("\n| inclusive (any frame of the chain) | share" + (" | µs/msg |" if us else " |"))
    print("|---|---|" + ("---|" if us else ""))
    for label, _ in MARKERS:
        if marks[label]:
            print(f"| {label} | " + fmt(marks[label]) + " |")
    print(f"\ntop {top} leaf symbols:")
    print("| symbol | where | class | share |\n|---|---|---|---|")
    for (cat, sym, dso), w in syms.most_common(top):
        d = sym if len(sym) < 90 else sym[:87] + "..."
        if sym.startswith("$s"):
            try:
                d = subprocess.run(["swift", "demangle", "--simplified", "--compact", sym], capture_output=True,
                                   text=True, timeout=20).stdout.strip() or sym
                d = d if len(d) < 110 else d[:107] + "..."
            except Exception:
                pass
        print(f"| `{d}` | {dso} | {cat} | {100.0 * w / total:.2f}% |")
    # User-space breakdown relative to user time only.
    user = {c: w for c, w in cats.items() if c != "kernel"}
    utot = sum(user.values())
    if utot:
        print("\nuser space only (100% = user time):")
        for c, w in sorted(user.items(), key=lambda x: -x[1]):
            print(f"  {c:16} {100.0 * w / utot:5.1f}%" + (f"  {us * w / total:6.2f} µs/msg" if us else ""))
    if out:
        with open(out, "w") as f:
            json.dump({"total": total, "us_per_msg": us, "categories": dict(cats),
                       "kernel": {f"{a}/{b}": w for (a, b), w in ksplit.items()},
                       "inclusive": dict(marks),
                       "top": [[c, s, d, w] for (c, s, d), w in syms.most_common(60)]}, f, indent=1)


if __name__ == "__main__":
    main()
