"""Chapter 5's ladder: switch the fast recipe's techniques on one at a time and measure each.

    python tests/benchmarks/bench_ladder.py [--n-iter 150] [--json book/data/ch5_ladder.json]

Every rung fits for the same number of iterations on the same rays and is scored
once at the end on the 30 held-out views; seconds per iteration are the mean
fitting time (evaluation excluded). Chapter 5 shows the recorded table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
os.environ.setdefault("VOLRENDER_OFFLINE", "1")

from bench_fit import machine  # noqa: E402  (also sets COW_MESH_DIR)

from helpers import data, fast, hull  # noqa: E402


def ladder(n_iter: int):
    """``(name, settings)`` pairs, each adding one technique to the one before."""
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
        schedule="step",
        sparse_adam=False,
    )
    rungs = [("box only, 10-image batches, sigmoid", base)]
    steps = [
        ("+ visual hull skipping", dict(hull=True)),
        ("+ random rays across views", dict(random_rays=True)),
        ("+ one fused lookup", dict(fused=True)),
        ("+ step-aware softplus density", dict(density="softplus")),
        ("+ coarse-to-fine 64^3 -> 128^3", dict(coarse_volume_size=64, coarse_fraction=0.5)),
        ("+ TV and exponential lr decay", dict(tv_weight=1e-4, schedule="exp")),
        ("+ masked (sparse) Adam", dict(sparse_adam=True)),
        ("+ early ray termination", dict(early_stop=1e-3)),
    ]
    settings = base
    for name, change in steps:
        if name == "+ early ray termination":
            rungs.append((name, replace(settings, **change)))  # tried on top, not kept
            continue
        settings = replace(settings, **change)
        rungs.append((name, settings))
    return rungs


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-iter", type=int, default=150)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print("machine:", machine())
    train = data.generate_cow_renders(num_views=40, image_size=128, device="cpu")
    heldout = data.generate_heldout_renders(device="cpu")
    occupancy = hull.carve(train.silhouettes, train.cameras(), volume_size=128)
    rows = []
    for name, settings in ladder(args.n_iter):
        occ = occupancy if settings.hull else None
        _, hist = fast.fit(train, heldout, settings, occupancy=occ)
        prep = hist.seconds[0] - (hist.seconds[1] - hist.seconds[0])
        row = {
            "rung": name,
            "s_per_iter": (hist.seconds[-1] - prep) / len(hist.seconds),
            "fit_s": hist.seconds[-1],
            "psnr": hist.psnr[-1],
            "iou": hist.iou[-1],
            "settings": asdict(settings),
        }
        rows.append(row)
        print(
            f"{name:42s} {row['s_per_iter']:6.3f} s/iter  {row['fit_s']:6.1f} s  "
            f"{row['psnr']:6.2f} dB  IoU {row['iou']:.3f}",
            flush=True,
        )
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "n_iter": args.n_iter, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
