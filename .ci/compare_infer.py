"""Compare two `python -m engine infer --json` outputs: same images, same top-1 classes, and
probabilities within a float32 tolerance. Exits non-zero with a one-line reason otherwise."""

import json
import sys


def main(a_path: str, b_path: str, rtol: float = 1e-4) -> int:
    a, b = (json.load(open(p)) for p in (a_path, b_path))
    ra, rb = a["results"], b["results"]
    if len(ra) != len(rb):
        print(f"{a_path}: {len(ra)} results, {b_path}: {len(rb)}")
        return 1
    worst = 0.0
    for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
        if x["top"][0]["index"] != y["top"][0]["index"]:
            print(f"image {i}: top-1 {x['top'][0]['index']} ({a['backend']}) vs "
                  f"{y['top'][0]['index']} ({b['backend']})")
            return 1
        pa, pb = x["top"][0]["prob"], y["top"][0]["prob"]
        worst = max(worst, abs(pa - pb) / max(abs(pa), 1e-12))
    if worst > rtol:
        print(f"top-1 probabilities differ by {worst:.2e} relative (> {rtol})")
        return 1
    print(f"{len(ra)} images: same top-1 ({a['backend']} vs {b['backend']}), "
          f"accuracy {a['accuracy']} vs {b['accuracy']}, max relative prob diff {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
