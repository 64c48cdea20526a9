"""python -m benchmarks [NAME ...]: run every bench_*.py (or the named ones) and print ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import benchmarks
from benchmarks.common import print_rows


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    failed = 0
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        try:
            rows = module.main()
        except Exception:
            failed += 1
            print(f"\n== {name}: FAILED")
            traceback.print_exc()
            continue
        print_rows(getattr(module, "TITLE", name), rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
