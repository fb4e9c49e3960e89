"""What total variation (TV) and the learning-rate decay do over the fast recipe's full length.

Run from the repository root (not collected by pytest: the name does not start with test_):

    python tests/benchmarks/bench_tv_decay.py [--seeds 0 1] [--json book/data/ch5_tv_decay.json]

Each variant is Chapter 5's recipe, ``fast.FastSettings()`` as the CPU runs it (300 iterations,
150 at 64^3 then 150 at 128^3, learning rate 0.15), with TV on or off (``tv_weight`` 1e-4 or 0)
and the learning rate decayed exponentially to a tenth (``schedule="exp"``), held constant
(``"constant"``), or dropped tenfold at 75 % of the iterations like Chapter 4 (``"step"``).
The recipe is the last variant: no TV, the tenfold drop (every variant uses one 128^3 hull
carved beforehand, where ``fast.fit`` alone would carve a 64^3 one for the coarse stage).
One more variant is the recipe without early ray termination (``early_stop=0``): what it
saves grows with the samples per ray, so a whole fit, most of whose time goes to the 128^3
stage, measures it better than the ladder's short runs.
Every variant runs with each random seed (``FastSettings.seed``: which rays each step draws) on
the same 40 training views and hull, and is scored on the 30 held-out views every 50 iterations.
The final PSNR does not depend on the machine's load; seconds per iteration do, so the load
average is recorded before and after every fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
os.environ.setdefault("VOLRENDER_OFFLINE", "1")

from bench_fit import machine  # noqa: E402  (also sets COW_MESH_DIR)

from helpers import data, fast, hull  # noqa: E402

VARIANTS = [  # (name, tv_weight, schedule, early_stop); the last is the recipe
    ("TV + exponential decay", 1e-4, "exp", 1e-3),
    ("no TV, exponential decay", 0.0, "exp", 1e-3),
    ("TV, constant lr", 1e-4, "constant", 1e-3),
    ("no TV, constant lr", 0.0, "constant", 1e-3),
    ("TV, tenfold drop at 75 %", 1e-4, "step", 1e-3),
    ("recipe, no early termination", 0.0, "step", 0.0),
    ("no TV, tenfold drop at 75 %", 0.0, "step", 1e-3),
]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print("machine:", machine(), flush=True)
    train = data.generate_cow_renders(num_views=40, image_size=128, device="cpu")
    heldout = data.generate_heldout_renders(device="cpu")
    occupancy = hull.carve(train.silhouettes, train.cameras(), volume_size=128)
    base = fast.FastSettings.for_device("cpu")
    rows = []
    for seed in args.seeds:  # every variant once per seed, so that a change of load hits them all
        for name, tv_weight, schedule, early_stop in VARIANTS:
            change = dict(tv_weight=tv_weight, schedule=schedule, early_stop=early_stop)
            settings = replace(base, **change, seed=seed, eval_every=50)
            load_before = os.getloadavg()[0]
            _, hist = fast.fit(train, heldout, settings, occupancy=occupancy)
            row = {
                "variant": name,
                "tv_weight": tv_weight,
                "schedule": schedule,
                "early_stop": early_stop,
                "seed": seed,
                "n_iter": settings.n_iter,
                "psnr": hist.psnr[-1],
                "iou": hist.iou[-1],
                "fit_s": hist.seconds[-1],
                "s_per_iter": hist.seconds[-1] / len(hist.seconds),
                "curve": [[i, p] for i, p in zip(hist.eval_iterations, hist.psnr, strict=True)],
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"seed {seed}  {name:28s} {row['psnr']:6.2f} dB  IoU {row['iou']:.3f}  "
                f"{row['s_per_iter']:.3f} s/iter  load {load_before:.1f}->{row['load_after']:.1f}",
                flush=True,
            )
    record = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "views": "final held-out PSNR on the 30 held-out views",
        "n_iter": base.n_iter,
        "seeds": args.seeds,
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
