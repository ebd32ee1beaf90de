#!/usr/bin/env python3
"""Live heap per connection by allocation site, from `heaptrack_print -l 1 -m 1`
(the leak list of a run killed while every connection was open).

    heapsites.py HEAPTRACK_PRINT_OUTPUT CONNS

A site is the innermost frame in our code (Sources/, CSources/) or in
swift-log, with the allocating function next to it. Bytes are requested
sizes; "malloc chunk" adds glibc's per-allocation overhead (8 B header, 16 B
rounding, 32 B minimum), which is what RSS pays.
"""
import re
import subprocess
import sys

UNIT = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9}
ALLOCATORS = re.compile(r"^(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|operator new|swift_slowAlloc|"
                        r"swift_allocObject|swift_allocBox|swift_makeBoxUnique|swift_allocEmptyBox|__swift_\w+|"
                        r"\$ss\w+|\$sSD\w+|\$sSa\w+|\$sSS\w+|\$sSh\w+|_swift_stdlib\w+|swift_\w+|\$s\w*SS\w*Tg5|"
                        r"\$s\w+TW|\$s\w+Tf\w+|\$s\w+Tg5|__libc_\w+)$")
OURS = re.compile(r"(^|/)(Sources|CSources)/|swift-log/Sources/")


def size(s):
    m = re.match(r"([\d.]+)([KMG]?)", s)
    return float(m.group(1)) * UNIT[m.group(2)]


def chunk(n):
    return max(32, (int(n) + 8 + 15) // 16 * 16)


_dm = {}


def demangle(s):
    if not s.startswith("$s"):
        return s
    if s not in _dm:
        try:
            _dm[s] = subprocess.run(["swift", "demangle", "--simplified", "--compact", s], capture_output=True,
                                    text=True, timeout=20).stdout.strip() or s
        except Exception:
            _dm[s] = s
    return _dm[s]


def parse(text):
    """Yields (bytes, calls, [(function, location)]) for every backtrace of the leak list."""
    lines = text.splitlines()
    try:
        i = lines.index("MEMORY LEAKS") + 1
    except ValueError:
        return
    cur = None
    head = re.compile(r"^(\s*)([\d.]+[KMG]?) leaked over (\d+) calls from(:?)\s*$")
    while i < len(lines):
        line = lines[i]
        m = head.match(line)
        if m:
            if cur and cur[2]:
                yield cur
            if m.group(1) == "" and m.group(4) == "":
                # A merged group's header: its first frame follows; the backtraces under it come with ':'.
                top = lines[i + 1].strip() if i + 1 < len(lines) else ""
                cur = None
                i += 1
                continue
            cur = (size(m.group(2)), int(m.group(3)), [])
        elif cur is not None and line.startswith("    ") and not line.startswith("      "):
            cur[2].append([line.strip(), ""])
        elif cur is not None and line.strip().startswith(("at ", "in ")) and cur[2]:
            if line.strip().startswith("at "):
                cur[2][-1][1] = line.strip()[3:]
        elif line.startswith(("total runtime", "bytes allocated", "peak heap", "PEAK", "MOST")):
            break
        i += 1
    if cur and cur[2]:
        yield cur


def site_of(frames):
    alloc = None
    for fn, loc in frames:
        if alloc is None and not ALLOCATORS.match(fn):
            alloc = fn
        if OURS.search(loc):
            return fn, loc, alloc
    return (alloc or frames[0][0]), "", alloc


def summarize(text, conns):
    sites = {}
    total = total_chunk = 0
    for b, calls, frames in parse(text):
        fn, loc, alloc = site_of(frames)
        loc = re.sub(r"^.*?/((?:C?Sources|checkouts)/)", r"\1", loc)
        key = (fn, loc)
        s = sites.setdefault(key, [0, 0, 0, alloc])
        s[0] += b
        s[1] += calls
        s[2] += calls * chunk(b / max(calls, 1))
        total += b
        total_chunk += calls * chunk(b / max(calls, 1))
    rows = sorted(sites.items(), key=lambda kv: -kv[1][0])
    out = [f"live heap at kill: {total / 1e6:.2f} MB requested ({total / conns:.0f} B per connection), "
           f"{total_chunk / 1e6:.2f} MB as malloc chunks ({total_chunk / conns:.0f} B per connection)\n",
           "| site (innermost frame in our code or swift-log) | where | allocs per conn | B per conn (requested) "
           "| B per conn (malloc chunks) |", "|---|---|---|---|---|"]
    rest = [0, 0, 0]
    for (fn, loc), (b, calls, ch, alloc) in rows:
        if calls < conns * 0.5:
            rest[0] += b; rest[1] += calls; rest[2] += ch
            continue
        name = demangle(fn)
        if len(name) > 100:
            name = name[:97] + "..."
        out.append(f"| `{name}` | {loc} | {calls / conns:.2f} | {b / conns:.0f} | {ch / conns:.0f} |")
    out.append(f"| everything else (sites with < 0.5 allocations per connection) | | {rest[1] / conns:.2f} | "
               f"{rest[0] / conns:.0f} | {rest[2] / conns:.0f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarize(open(sys.argv[1]).read(), int(sys.argv[2])))
