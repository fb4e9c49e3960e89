"""Chapter 5's ladder: switch the fast recipe's techniques on one at a time and measure each.

    python tests/benchmarks/bench_ladder.py --n-iter 50 --repeat 2 --json book/data/ch5_ladder.json

Every step of the ladder fits for the same number of iterations on the same rays and is
scored once at the end on the 30 held-out views. Seconds per iteration are the mean fitting
time (evaluation excluded), the fastest of ``--repeat`` runs of the step, made in turns
across the steps: a shared machine only ever slows a run down, and the PSNR is the same in
every run. ``load_before`` and ``load_after`` are the lowest and highest 1-minute load
averages seen around a step's runs. Every step keeps its learning rate constant (the recipe
drops it tenfold at 75 %) and uses no total variation: what those two do is measured over
whole fits by ``bench_tv_decay.py``, since a short run cannot show it. Chapter 5 shows the
recorded table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
os.environ.setdefault("VOLRENDER_OFFLINE", "1")

from bench_fit import machine  # noqa: E402  (also sets COW_MESH_DIR)

from helpers import data, fast, hull  # noqa: E402


def ladder(n_iter: int):
    """``(name, settings)`` pairs, each step adding one technique to the one before."""
    base = fast.FastSettings(
        n_iter=n_iter,
        eval_every=n_iter,
        hull=False,
        random_rays=False,
        fused=False,
        density="sigmoid",
        coarse_volume_size=0,
        coarse_fraction=0.0,
        tv_weight=0.0,
        schedule="constant",
        sparse_adam=False,
        early_stop=0.0,
        lr=0.1,  # Chapter 4's learning rate and its faint start, until the step that changes them
        init_density=-4.0,
    )
    steps_of_ladder = [("box only, 10-image batches, sigmoid", base)]
    steps = [
        ("+ visual hull skipping", dict(hull=True)),
        ("+ random rays across views", dict(random_rays=True)),
        ("+ one fused lookup", dict(fused=True)),
        ("+ step-aware softplus density", dict(density="softplus")),
        ("+ coarse-to-fine 64^3 -> 128^3", dict(coarse_volume_size=64, coarse_fraction=0.5)),
        ("+ masked (sparse) Adam", dict(sparse_adam=True)),
        ("+ a nearly opaque start, lr 0.15", dict(init_density=-2.0, lr=0.15)),
        ("+ early ray termination", dict(early_stop=1e-3)),
    ]
    settings = base
    for name, change in steps:
        settings = replace(settings, **change)
        steps_of_ladder.append((name, settings))
    return steps_of_ladder


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-iter", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="runs per step; the fastest one is kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print("machine:", machine())
    train = data.generate_cow_renders(num_views=40, image_size=128, device="cpu")
    heldout = data.generate_heldout_renders(device="cpu")
    occupancy = hull.carve(train.silhouettes, train.cameras(), volume_size=128)
    steps = ladder(args.n_iter)
    runs = {name: [] for name, _ in steps}
    loads = {name: [] for name, _ in steps}
    for round_ in range(args.repeat):  # round-robin: a burst of load on the machine hits one run, not one step
        for name, settings in steps:
            occ = occupancy if settings.hull else None
            load_before = os.getloadavg()[0]
            runs[name].append(fast.fit(train, heldout, settings, occupancy=occ)[1])
            loads[name] += [load_before, os.getloadavg()[0]]
            print(f"round {round_ + 1}: {name}", flush=True)
    rows = []
    for name, settings in steps:
        # the first iteration's clock includes the preparation (hull, rays): estimate it from the second
        per_iter = [(h.seconds[-1] - h.seconds[0] + (h.seconds[1] - h.seconds[0])) / len(h.seconds) for h in runs[name]]
        hist = runs[name][per_iter.index(min(per_iter))]
        row = {
            "step": name,
            "s_per_iter": min(per_iter),
            "s_per_iter_runs": per_iter,
            "fit_s": hist.seconds[-1],
            "psnr": hist.psnr[-1],
            "iou": hist.iou[-1],
            "settings": asdict(settings),
            "load_before": min(loads[name]),
            "load_after": max(loads[name]),
        }
        rows.append(row)
        print(
            f"{name:42s} {row['s_per_iter']:6.3f} s/iter  {row['fit_s']:6.1f} s  "
            f"{row['psnr']:6.2f} dB  IoU {row['iou']:.3f}  load {row['load_before']:.1f} to {row['load_after']:.1f}",
            flush=True,
        )
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record = {"machine": machine(), "date": date, "n_iter": args.n_iter, "repeat": args.repeat, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
