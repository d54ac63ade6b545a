"""Counting a run's results and printing them: progress lines, the report, the summary line."""

from __future__ import annotations

import re

from tests.fuzz.mutants.measure import MiB
from tests.fuzz.mutants.oracle import ACCEPTANCE, FINDING_CLASSES

RSS_SAMPLE_EVERY = 1000   # mutants between samples of a worker's resident size


def signature(cls: str, line: str) -> str:
    """A finding's class and message with the numbers taken out: one per kind of finding."""
    return cls + ":" + re.sub(r"\d+(\.\d+)?", "N", line)[:80]


def _bump(d: dict, k, n: int = 1) -> None:
    d[k] = d.get(k, 0) + n


def fmt_counter(c: dict, limit: int = 99) -> str:
    items = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return ", ".join(f"{k}={v}" for k, v in items) or "none"


def new_stats() -> dict:
    """Plain dicts and numbers only: the statistics are also written as JSON."""
    return {"done": 0, "seconds": 0.0, "outcomes": {}, "reader": {}, "reasons": {},
            "findings": {}, "finding_lines": {}, "notes": {}, "kinds": {}, "ops_loaded": {},
            "max_seconds": 0.0, "max_seconds_at": None, "reruns": 0, "max_untraced": 0.0,
            "max_untraced_cpu": 0.0, "max_peak": 0, "max_peak_at": None, "max_rss": 0,
            "max_rss_at": None, "max_rss_total": 0, "workers": {}}


def add_result(stats: dict, i: int, r: dict) -> None:
    """One mutant's result as a worker sent it."""
    stats["done"] += 1
    _bump(stats["outcomes"], r["outcome"])
    _bump(stats["reader"], r["reader"])
    _bump(stats["kinds"], r["kind"])
    for reason in r["reasons"]:
        _bump(stats["reasons"], reason)
    for n in r["notes"]:
        _bump(stats["notes"], re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", n)[:90])
    if r["outcome"].startswith("loaded"):
        for o in r["ops"]:
            _bump(stats["ops_loaded"], o)
    for cls, line in r["findings"]:
        add_finding(stats, i, cls, line, r["detail"])
    if r["seconds"] > stats["max_seconds"]:
        stats["max_seconds"], stats["max_seconds_at"] = r["seconds"], i
    if r["untraced"] is not None:
        stats["reruns"] += 1
        stats["max_untraced"] = max(stats["max_untraced"], r["untraced"])
        stats["max_untraced_cpu"] = max(stats["max_untraced_cpu"], r["untraced_cpu"])
    if r["peak"] > stats["max_peak"]:
        stats["max_peak"], stats["max_peak_at"] = r["peak"], i
    if r["rss"] > stats["max_rss"]:
        stats["max_rss"], stats["max_rss_at"] = r["rss"], i
    stats["max_rss_total"] = max(stats["max_rss_total"], r["rss_total"])


def add_finding(stats: dict, i: int, cls: str, line: str, detail: str = "") -> None:
    _bump(stats["findings"], cls)
    stats["finding_lines"].setdefault(signature(cls, line),
                                      f"i={i}: {cls}: {line}" + (f" [{detail}]" if detail else ""))


def progress_line(stats: dict, count: int, elapsed: float) -> str:
    rate = stats["done"] / max(elapsed, 1e-9)
    rss = " ".join(f"{w['samples'][-1][1] / MiB:.0f}" for w in stats["workers"].values()
                   if w["samples"])
    return (f"[{stats['done']}/{count}] {elapsed:.0f} s, {rate:.1f}/s; findings: "
            f"{fmt_counter(stats['findings'])}; max {stats['max_seconds']:.2f} s, peak "
            f"{stats['max_peak'] / MiB:.1f} MiB; worker RSS {rss or '-'} MiB")


def print_report(stats: dict) -> None:
    print("\nreasons (expected errors, top 40):")
    for k, v in sorted(stats["reasons"].items(), key=lambda kv: -kv[1])[:40]:
        print(f"  {v:7d}  {k}")
    print("reader outcomes:", fmt_counter(stats["reader"]))
    print("mutant kinds:", fmt_counter(stats["kinds"]))
    print("mutations among loaded mutants:", fmt_counter(stats["ops_loaded"]))
    print("notes:", fmt_counter(stats["notes"], 15))
    for wid, w in stats["workers"].items():
        samples = ", ".join(f"{i}:{v / MiB:.0f}" for i, v in w["samples"])
        print(f"worker {wid}: {w['mutants']} mutants, RSS after warm-up {w['base'] / MiB:.0f} "
              f"MiB, peak {w['peak'] / MiB:.0f} MiB; resident (MiB) after mutant {samples}")
    if stats["finding_lines"]:
        print("distinct findings (first of each):")
        for line in stats["finding_lines"].values():
            print("  " + line[:400])


def summary_line(args, stats: dict) -> str:
    o = stats["outcomes"]
    fmt_err = {k.split("/", 1)[1]: v for k, v in o.items() if k.startswith("FormatError/")}
    findings = {c: stats["findings"].get(c, 0) for c in FINDING_CLASSES}
    named = ("loaded-equal", "loaded-changed-verified", "loaded-unverified", "ModelError",
             "InputError")
    peaks = "/".join(f"{w['peak'] / MiB:.0f}" for w in stats["workers"].values())
    return (
        f"SUMMARY seed={args.seed} start={args.start} backend={args.backend} "
        f"mutants={stats['done']} | outcomes: loaded-equal={o.get('loaded-equal', 0)} "
        f"loaded-changed-verified={o.get('loaded-changed-verified', 0)} "
        f"loaded-unverified={o.get('loaded-unverified', 0)} "
        f"FormatError={sum(fmt_err.values())} ({fmt_counter(fmt_err)}) "
        f"ModelError={o.get('ModelError', 0)} InputError={o.get('InputError', 0)} "
        f"other={sum(v for k, v in o.items() if k not in named and '/' not in k)} "
        f"| findings: " + " ".join(f"{c}={findings[c]}" for c in ACCEPTANCE)
        + " (also " + " ".join(f"{c}={findings[c]}" for c in FINDING_CLASSES
                               if c not in ACCEPTANCE) + ")"
        + f" | max wall/mutant {stats['max_seconds']:.3f} s traced (i={stats['max_seconds_at']}),"
        f" {stats['reruns']} re-run without tracemalloc: max {stats['max_untraced']:.3f} s "
        f"wall, {stats['max_untraced_cpu']:.3f} s CPU | max tracemalloc peak "
        f"{stats['max_peak'] / MiB:.1f} MiB (i={stats['max_peak_at']}) | RSS: max rise during "
        f"one mutant's targets {stats['max_rss'] / MiB:.0f} MiB (i={stats['max_rss_at']}), max "
        f"high-water over the post-warm-up baseline {stats['max_rss_total'] / MiB:.0f} MiB, "
        f"peak per worker {peaks} MiB | {stats['seconds']:.0f} s")
