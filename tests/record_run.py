"""Write the record of a real run of the README's test command, for the book's status page and chapter boxes.

Run the tests with a JUnit report, then record it (from the repository root):

    python -m pytest --nbval --junitxml=/tmp/run.xml
    python tests/record_run.py /tmp/run.xml --out book/data/run_cpu.json

On a GPU machine, ``bash .gpu/run.sh --junitxml=$OUT/junit.xml`` writes the report and
``$OUT/gpu_env.txt``; record them with ``--gpu-env $OUT/gpu_env.txt --out book/data/run_gpu.json``.
Everything in the record is read from the report and the machine; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def read_junit(path: Path) -> dict:
    """Totals and seconds per notebook from pytest's JUnit XML (nbval names each cell's case by its notebook)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if not suites:
        raise ValueError(f"{path} has no <testsuite>: is it pytest's --junitxml output?")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    notebooks: dict[str, float] = {}
    for case in (c for s in suites for c in s.iter("testcase")):
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        counts[outcome] += 1
        m = re.search(r"(\d\d_\w+)\.ipynb$", case.get("classname", ""))
        if m:
            notebooks[m.group(1)] = notebooks.get(m.group(1), 0.0) + float(case.get("time", 0))
    stamp = suites[0].get("timestamp")
    when = datetime.fromisoformat(stamp) if stamp else datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return {
        "date": when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **counts,
        "seconds": round(sum(float(s.get("time", 0)) for s in suites), 1),
        "notebooks": {k: round(v, 1) for k, v in sorted(notebooks.items())},
    }


def versions_here() -> dict:
    import pytorch3d
    import torch

    return {"torch": torch.__version__, "pytorch3d": pytorch3d.__version__}


def gpu_facts(env_file: Path) -> dict:
    """GPU, driver and versions from ``.gpu/run.sh``'s ``gpu_env.txt``."""
    text = env_file.read_text()
    m = re.search(r"torch (\S+) pytorch3d (\S+) on (.+)", text)
    if not m:
        raise ValueError(f"{env_file} does not say which torch and PyTorch3D ran on the GPU:\n{text}")
    driver = text.splitlines()[0].split(",")[-1].strip()
    return {"hardware": f"{m.group(3).strip()} (driver {driver})", "torch": m.group(1), "pytorch3d": m.group(2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path, help="pytest --junitxml output")
    parser.add_argument("--out", type=Path, required=True, help="book/data/run_cpu.json or run_gpu.json")
    parser.add_argument("--gpu-env", type=Path, help="gpu_env.txt from .gpu/run.sh: the run was on that GPU")
    parser.add_argument("--command", default="python -m pytest --nbval", help="the test command as it was run")
    args = parser.parse_args(argv)
    record = {"command": args.command, **read_junit(args.junit)}
    if args.gpu_env:
        record = {"device": "cuda", **gpu_facts(args.gpu_env), **record}
    else:
        record = {
            "device": "cpu",
            "hardware": f"{os.cpu_count()} CPU cores ({cpu_name()})",
            **versions_here(),
            **record,
        }
    if not record["notebooks"]:
        raise SystemExit(f"{args.junit} has no notebook cells: run the test command with --nbval")
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
