"""Render pytest-benchmark JSON files as the Markdown table in BENCHMARKS.md.

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/render.py bench.json > BENCHMARKS.md
    python benchmarks/render.py after.json --before before.json --command "..." > BENCHMARKS.md

With --before, each benchmark also shows the median of the earlier run and the ratio
after / before (under 1: faster). Several JSON files of the same side: the smallest median
of each benchmark is kept (the run least disturbed by other processes).
"""

import argparse
import json
import platform


def medians(paths: list[str]) -> tuple[dict, dict]:
    """name -> benchmark (the one with the smallest median), and the first file's document."""
    best, first = {}, None
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        first = first or doc
        for b in doc["benchmarks"]:
            if b["name"] not in best or b["stats"]["median"] < best[b["name"]]["stats"]["median"]:
                best[b["name"]] = b
    return best, first


def render(after: list[str], before: list[str], command: str) -> str:
    now, doc = medians(after)
    then = medians(before)[0] if before else {}
    info = doc.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or platform.processor()
    head = "| group | benchmark | median | min | rounds |"
    rule = "|---|---|---:|---:|---:|"
    if then:
        head += " before | after / before |"
        rule += "---:|---:|"
    lines = ["# Benchmarks", "",
             f"Measured {doc.get('datetime', '')[:19]} on {info.get('machine', '?')}, {cpu}, "
             f"Python {info.get('python_version', '?')}, with:", "", f"    {command}", "",
             head, rule]
    for name, b in sorted(now.items(), key=lambda kv: (kv[1].get("group") or "", kv[0])):
        s = b["stats"]
        row = (f"| {b.get('group') or ''} | `{name}` | {s['median'] * 1e3:.3f} ms | "
               f"{s['min'] * 1e3:.3f} ms | {s['rounds']} |")
        if then:
            old = then.get(name, {}).get("stats", {}).get("median")
            row += (f" {old * 1e3:.3f} ms | {s['median'] / old:.2f} |" if old else " - | - |")
        lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("after", nargs="+", help="pytest-benchmark JSON file(s)")
    ap.add_argument("--before", nargs="*", default=[], help="JSON file(s) of an earlier run")
    ap.add_argument("--command", default="pytest benchmarks/ --benchmark-only",
                    help="the command that produced the figures, shown above the table")
    args = ap.parse_args(argv)
    print(render(args.after, args.before, args.command), end="")


if __name__ == "__main__":
    main()
