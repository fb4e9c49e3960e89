"""How many rays per step, how many steps, and whether to start at 64^3: the fast recipe's GPU settings.

Run from the repository root (not collected by pytest: the name does not start with test_):

    python tests/benchmarks/bench_gpu_settings.py --json book/data/ch5_gpu_settings.json
    python tests/benchmarks/bench_gpu_settings.py --device cuda --json $OUT/gpu_settings.json

Each variant is Chapter 5's recipe, ``fast.FastSettings()``, with ``rays_per_step``, ``n_iter``
and the coarse stage changed, fitted on the same 40 training views and scored on the 30
held-out views every 10 iterations (outside the clock). Each variant carves its own hulls, as
``fast.fit`` does, so the fitting time includes them. The record says, for each target PSNR of
``bench_fit.TARGETS["cuda"]``, after how many iterations and seconds a variant first reached it.
On the CPU only the iterations carry over to a GPU, where a step's cost depends on the device;
``--device cuda`` measures the seconds there. A ``.md`` table is written beside the ``.json``.
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

import torch  # noqa: E402
from bench_fit import TARGETS, machine  # noqa: E402  (also sets COW_MESH_DIR)

from helpers import data, fast  # noqa: E402

VARIANTS = [  # (rays per step, iterations, fraction of them at 64^3; 0: 128^3 throughout)
    (8192, 300, 0.5),  # the CPU recipe
    (32768, 300, 0.33),
    (32768, 200, 0.33),
    (32768, 200, 0.2),
    (65536, 200, 0.25),
    (32768, 200, 0.0),
    (65536, 200, 0.0),
]


def describe(settings: fast.FastSettings) -> str:
    n = settings.coarse_iters
    stage = f"the first {n} at {settings.coarse_volume_size}³" if n else f"all at {settings.volume_size}³"
    return f"{settings.rays_per_step:,} rays per step, {settings.n_iter} steps, {stage}"


def first(curve, psnr):
    """``(iteration, seconds)`` of the first evaluation at or above ``psnr``, or ``(None, None)``."""
    return next(((i, s) for i, s, p in curve if p >= psnr), (None, None))


def gpu_run() -> dict | None:
    """The recorded GPU run of ``bench_fit.py`` (``book/data/ch5_bench_gpu.json``), if there is one."""
    path = ROOT / "book" / "data" / "ch5_bench_gpu.json"
    return json.loads(path.read_text()) if path.is_file() else None


def step_costs(run: dict) -> dict:
    """Seconds per step at 64^3 and at 128^3, and the rest of the fitting time (the hull, the rays), of
    the fast recipe in a ``bench_fit.py`` record: slopes of its curve's seconds within each stage."""
    fast_run, settings = run["fast"], run["fast"]["settings"]
    n_iter, curve = settings["n_iter"], run["fast"]["curve"]
    every = fast_run.get("eval_every") or n_iter // len(curve)  # older records: evenly spaced evaluations
    coarse = fast.FastSettings(**settings).coarse_iters
    points = [(every * (k + 1), s) for k, (s, _, _) in enumerate(curve)]
    low = [(i, s) for i, s in points if i <= coarse]
    high = [(i, s) for i, s in points if i >= coarse + every]
    slope = lambda p: (p[-1][1] - p[0][1]) / (p[-1][0] - p[0][0]) if len(p) > 1 else None  # noqa: E731
    per_low, per_high = slope(low), slope(high)
    first_i, first_s = points[0]
    rest = first_s - first_i * (per_low if coarse else per_high)
    return {"rays_per_step": settings["rays_per_step"], "low": per_low, "high": per_high, "rest": rest}


def report(record: dict, gpu: dict | None = None) -> str:
    """The record as a Markdown table for the benchmarks page, and what ``gpu`` (a ``bench_fit.py``
    record made on a GPU) says of a step's cost there."""
    targets = [psnr for psnr, _ in TARGETS["cuda"]]
    head = " | ".join(f"{p:.2f} dB first scored after" for p in targets)
    lines = [
        f"Recorded {record['date']} on {record['machine']}, device {record['device']}.",
        "",
        f"| variant | {head} | seconds per step, hull carving included | final PSNR, 30 held-out views |",
        "|---|" + "---|" * (len(targets) + 2),
    ]
    for row in record["rows"]:
        cells = []
        for psnr in targets:
            i, s = first(row["curve"], psnr)
            cells.append("not reached" if i is None else f"{i} steps, {s:.2f} s")
        lines.append(
            f"| {row['variant']} | {' | '.join(cells)} | {row['s_per_iter']:.3f} | {row['final_psnr']:.2f} dB |"
        )
    if gpu is not None:
        c = step_costs(gpu)
        lines += [
            "",
            f"The recorded GPU run of `bench_fit.py` ({gpu['date']}, {gpu['machine'].split(';')[0]}), whose"
            f" fast recipe drew {c['rays_per_step']:,} rays per step, took {c['low'] * 1e3:.1f} ms per step at"
            f" 64³ and {c['high'] * 1e3:.1f} ms per step at 128³ (from the seconds at its scorings); about"
            f" {c['rest']:.2f} s of its fitting time came before the steps (carving the hull, clipping the rays).",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="fit every variant on this device (cpu or cuda)")
    parser.add_argument("--json", type=Path, help="write the record here (and its table beside it, as .md)")
    parser.add_argument("--report", type=Path, help="only rewrite the table (.md) of this recorded .json, then stop")
    args = parser.parse_args(argv)
    if args.report:
        args.report.with_suffix(".md").write_text(report(json.loads(args.report.read_text()), gpu_run()))
        return
    device = torch.device(args.device)
    print("machine:", machine(device), flush=True)
    train = data.generate_cow_renders(num_views=40, image_size=128, device=device)
    heldout = data.generate_heldout_renders(device=device)
    base = fast.FastSettings()
    if device.type == "cuda":  # the first CUDA calls load kernels: keep that out of every variant's clock
        fast.fit(train, None, replace(base, n_iter=6, coarse_fraction=0.5))  # 64^3, the switch, 128^3
    rows = []
    for rays, n_iter, coarse in VARIANTS:
        change = dict(rays_per_step=rays, n_iter=n_iter, coarse_fraction=coarse, eval_every=10)
        settings = replace(base, **change, coarse_volume_size=base.coarse_volume_size if coarse else 0)
        _, hist = fast.fit(train, heldout, settings)
        curve = [[i, s, p] for i, s, p in zip(hist.eval_iterations, hist.eval_seconds, hist.psnr, strict=True)]
        row = {
            "variant": describe(settings),
            "rays_per_step": rays,
            "n_iter": n_iter,
            "coarse_fraction": coarse,
            "final_psnr": hist.psnr[-1],
            "fit_s": hist.seconds[-1],
            "s_per_iter": hist.seconds[-1] / len(hist.seconds),
            "curve": curve,
        }
        rows.append(row)
        reached = ", ".join(f"{p:.2f} dB at step {first(curve, p)[0]}" for p, _ in TARGETS["cuda"])
        print(f"{row['variant']:40s} {reached}; final {row['final_psnr']:.2f} dB, {row['fit_s']:.1f} s", flush=True)
        record = {
            "machine": machine(device),
            "device": device.type,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "views": "PSNR on the 30 held-out views, every 10 iterations",
            "rows": rows,
        }
        if args.json:  # after every variant: a run stopped by a time limit keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=1) + "\n")
            args.json.with_suffix(".md").write_text(report(record, gpu_run()))


if __name__ == "__main__":
    main()
