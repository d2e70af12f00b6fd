"""`python -m benchmarks [name ...]`: run the ratio benchmarks, print a table."""

from __future__ import annotations

import importlib
import json
import os
import sys

# The table is the output: no library progress bars in between.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

NAMES = ("grading", "bootstrap", "rollouts", "resume")


def main(argv: list[str]) -> int:
    names = argv or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        print(f"error: unknown benchmark {unknown[0]!r}; known: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    import transformers

    transformers.utils.logging.disable_progress_bar()
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        results.append(importlib.import_module(f"benchmarks.bench_{name}").run())
    print(f"\n{'benchmark':<10} {'baseline':>10} {'optimised':>10} {'speed-up':>9}  what")
    for r in results:
        print(f"{r.name:<10} {r.baseline_s:>9.2f}s {r.optimised_s:>9.2f}s {r.speedup:>8.1f}x  "
              f"{r.optimised} vs {r.baseline}; {r.note}")
    print(json.dumps({r.name: round(r.speedup, 2) for r in results}))
    return 0


sys.exit(main(sys.argv[1:]))
