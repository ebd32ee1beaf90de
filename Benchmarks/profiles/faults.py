#!/usr/bin/env python3
"""Page faults and madvise in a perf profile, by the first user-space frames
that led to them (which allocation keeps getting fresh pages).
    faults.py PERF_DATA"""
import collections, re, subprocess, sys

p = subprocess.run(["perf", "script", "-i", sys.argv[1], "-F", "period,ip,sym,dso", "--no-inline"],
                   capture_output=True, text=True, errors="replace").stdout
c = collections.Counter(); tot = 0
for blk in p.split("\n\n"):
    fr = []
    for l in blk.splitlines()[1:]:
        m = re.match(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", l)
        if m: fr.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))
    if not fr: continue
    tot += 1
    names = [f[0] for f in fr]
    if "asm_exc_page_fault" in names: key = "page fault"
    elif any("madvise" in n for n in names): key = "madvise"
    elif names[0].startswith("__memmove") or names[0] in ("_copy_to_iter", "_copy_from_iter"): key = "copy " + names[0]
    else: continue
    user = [n for n, d in fr if not d.startswith("[kernel")][:3]
    user = [n if len(n) < 40 else n[:37] + "..." for n in user]
    c[(key, " < ".join(user))] += 1
for (k, u), v in c.most_common(14):
    print(f"{100 * v / tot:5.1f}%  {k:24} {u}")
