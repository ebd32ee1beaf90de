#!/usr/bin/env python3
"""Checks Autobahn reports against a baseline and writes the README table.

    autobahn-report.py --baseline FILE --readme README.md [--update-baseline] NAME=index.json...

A case fails the check when it is FAILED, MISSING (selected but no result),
or worse than its baseline behaviour. The README table is rebuilt between
the markers <!-- autobahn:begin --> and <!-- autobahn:end --> from the
reports, so the numbers there always come from a run.
"""
import argparse
import json
import sys
from collections import defaultdict

BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "MISSING"]
# Lower is better. INFORMATIONAL is the suite's verdict for cases with no
# right answer (e.g. 7.1.6), so it ranks with OK.
RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2, "FAILED": 3, "MISSING": 4}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def load(path):
    with open(path) as f:
        data = json.load(f)
    (agent,) = data.keys()
    return {case: result["behavior"] for case, result in data[agent].items()}


def table(name, results):
    groups = defaultdict(lambda: defaultdict(int))
    for case, behaviour in results.items():
        groups[case.split(".")[0]][behaviour] += 1
    cols = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
    lines = [f"**{name}**", "", "| group | " + " | ".join(cols) + " | total |",
             "|---|" + "---:|" * (len(cols) + 1)]
    totals = defaultdict(int)
    for group in sorted(groups, key=int):
        counts = groups[group]
        lines.append(f"| {group} | " + " | ".join(str(counts[c]) for c in cols)
                     + f" | {sum(counts.values())} |")
        for c in cols:
            totals[c] += counts[c]
    lines.append("| **all** | " + " | ".join(f"**{totals[c]}**" for c in cols)
                 + f" | **{sum(totals.values())}** |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--readme")
    ap.add_argument("--update-baseline", action="store_true")
    ap.add_argument("reports", nargs="+", help="NAME=path/to/index.json")
    args = ap.parse_args()

    try:
        with open(args.baseline) as f:
            baseline = json.load(f)
    except FileNotFoundError:
        baseline = {}

    problems = []
    runs = []
    best = dict(baseline)
    for spec in args.reports:
        name, path = spec.split("=", 1)
        results = load(path)
        runs.append((name, results))
        for case in set(baseline) | set(results):
            behaviour = results.get(case, "MISSING")
            if behaviour in ("FAILED", "MISSING"):
                problems.append(f"{name}: {case} {behaviour}")
            elif case in baseline and RANK[behaviour] > RANK[baseline[case]]:
                problems.append(f"{name}: {case} {behaviour}, was {baseline[case]}")
            if case in results and (case not in best or RANK[behaviour] < RANK[best[case]]):
                best[case] = behaviour
        non_ok = sorted((c for c, b in results.items() if b not in ("OK",)), key=case_key)
        print(f"{name}: {len(results)} cases; not OK: "
              + (", ".join(f"{c} {results[c]}" for c in non_ok) or "none"))

    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        begin, end = "<!-- autobahn:begin -->", "<!-- autobahn:end -->"
        if begin in text and end in text:
            body = "\n\n".join(table(f"{name} backend", results) for name, results in runs)
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            with open(args.readme, "w") as f:
                f.write(head + begin + "\n" + body + "\n" + end + tail)

    if args.update_baseline:
        # The baseline only ever improves: a case keeps its best result.
        with open(args.baseline, "w") as f:
            json.dump(dict(sorted(best.items(), key=lambda kv: case_key(kv[0]))), f, indent=0)
            f.write("\n")

    if problems:
        print("conformance check failed:")
        for p in sorted(problems):
            print("  " + p)
        return 1
    print("conformance check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
