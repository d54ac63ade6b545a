"""Render a pytest-benchmark JSON file as the Markdown table in BENCHMARKS.md.

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/render.py bench.json > BENCHMARKS.md
"""

import json
import platform
import sys


def render(doc: dict, command: str) -> str:
    info = doc.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or platform.processor()
    lines = [
        "# Benchmarks",
        "",
        f"Measured {doc.get('datetime', '')[:19]} on {info.get('machine', '?')}, {cpu}, "
        f"Python {info.get('python_version', '?')}, with:",
        "",
        f"    {command}",
        "",
        "| group | benchmark | median | min | rounds |",
        "|---|---|---:|---:|---:|",
    ]
    for b in sorted(doc["benchmarks"], key=lambda b: (b.get("group") or "", b["name"])):
        s = b["stats"]
        lines.append(f"| {b.get('group') or ''} | `{b['name']}` | {s['median'] * 1e3:.3f} ms | "
                     f"{s['min'] * 1e3:.3f} ms | {s['rounds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    cmd = sys.argv[2] if len(sys.argv) > 2 else "pytest benchmarks/ --benchmark-only"
    sys.stdout.write(render(doc, cmd))
