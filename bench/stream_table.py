#!/usr/bin/env python
"""Combine ``bench/stream.py`` result files (several seeds, both orders, arms run separately) into
one table: per task and order, each seed's learning-arm accuracy against seed-only and isolated,
the gain over isolated, the share of the seed-only-to-real gap closed, and the means.

    python bench/stream_table.py --results bench/results/stream-fwd-s0.json ... --arm experience \
        --out bench/results/stream-3seeds-combined.json

The seed_only and isolated rows (order does not change them) and ``real_2000`` are taken from
whichever file has them; a learning-arm row is placed by its file's ``order`` and its own seed.
When two files give the same row, the later one on the command line wins.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _mean(cells: list[dict[str, Any]], key: str) -> float | None:
    vals = [c[key] for c in cells if c[key] is not None]
    return round(statistics.mean(vals), 3) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", nargs="+", required=True, help="bench/stream.py result files")
    ap.add_argument("--arm", default="experience", help="the learning arm to tabulate (default: experience)")
    ap.add_argument("--out", default=None, help="JSON file for the combined table")
    args = ap.parse_args(argv)
    real: dict[str, Any] = {}
    base: dict[tuple[str, int, str], dict[str, Any]] = {}
    learn: dict[tuple[str, int, str], dict[str, Any]] = {}
    positions: dict[tuple[str, str], int] = {}
    for path in map(Path, args.results):
        data = json.loads(path.read_text())
        real.update(data.get("real_2000") or {})
        order = "rev" if data.get("order") == "reverse" else "fwd"
        for r in data["rows"]:
            if r["arm"] in ("seed_only", "isolated"):
                base[(r["task"], r["seed"], r["arm"])] = r
            elif r["arm"] == args.arm:
                learn[(r["task"], r["seed"], order)] = r
                positions[(r["task"], order)] = r["position"]
    table = []
    for order in ("fwd", "rev"):
        tasks = sorted((t for t, o in positions if o == order), key=lambda t: positions[(t, order)])
        for task in tasks:
            cells = []
            for (t, seed, o), r in sorted(learn.items()):
                so, iso = base.get((t, seed, "seed_only")), base.get((t, seed, "isolated"))
                if t != task or o != order or so is None:
                    continue
                cell = {"seed": seed, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_samples": r["n_samples"],
                        "wall_s": r["wall_s"], "seed_only": so["accuracy"], "isolated": iso["accuracy"] if iso else None,
                        "vs_seed_only": round(100 * (r["accuracy"] - so["accuracy"]), 1),
                        "vs_isolated": round(100 * (r["accuracy"] - iso["accuracy"]), 1) if iso else None}
                gap = real.get(task, {}).get("accuracy", 0) - so["accuracy"]
                cell["gap_closed"] = round((r["accuracy"] - so["accuracy"]) / gap, 3) if gap > 0 else None
                cells.append(cell)
            if not cells:
                continue

            row = {"order": order, "position": positions[(task, order)], "task": task, "seeds": cells,
                   **{f"mean_{k}": _mean(cells, k) for k in ("accuracy", "seed_only", "isolated", "vs_seed_only", "vs_isolated",
                                                       "gap_closed")}}
            table.append(row)
            print(f"{order} {row['position']} {task:10s} " + "  ".join(
                f"s{c['seed']}: {c['accuracy']:.3f} ({c['n_samples']} kept; {c['vs_seed_only']:+.1f} vs seeds, "
                f"{c['vs_isolated']:+.1f} vs isolated)" for c in cells)
                + f"  | mean {row['mean_accuracy']:.3f}, vs isolated {row['mean_vs_isolated']:+.1f}, gap closed "
                f"{row['mean_gap_closed']:.0%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"arm": args.arm, "results": args.results, "real_2000": real,
                                              "table": table}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
