"""Run times from the recorded runs of the test command (``book/data/run_cpu.json``, ``run_gpu.json``).

``{runtime}`04_fitting``` writes how long that chapter's cells took in the recorded CPU run and, when
one is recorded, the GPU run. ``{run-records}`` (a directive) writes a table of both records for the
status page. The records are written by ``tests/record_run.py`` from a real run, never by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parent.parent / "data"
RECORDS = {"cpu": "run_cpu.json", "gpu": "run_gpu.json"}


def load_records() -> dict[str, dict]:
    return {k: json.loads((DATA / f).read_text()) for k, f in RECORDS.items() if (DATA / f).exists()}


def duration(seconds: float) -> str:
    if seconds < 10:
        return "under 10 s"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"


def runtime_text(chapter: str, records: dict[str, dict]) -> str:
    parts = []
    cpu = records.get("cpu")
    if cpu is None or chapter not in cpu["notebooks"]:
        raise KeyError(f"no recorded CPU run of {chapter} in book/data/run_cpu.json (see tests/record_run.py)")
    parts.append(f"{duration(cpu['notebooks'][chapter])} on {cpu['hardware']} (recorded {cpu['date'][:10]})")
    gpu = records.get("gpu")
    if gpu and chapter in gpu["notebooks"]:
        parts.append(f"{duration(gpu['notebooks'][chapter])} on an {gpu['hardware']} (recorded {gpu['date'][:10]})")
    else:
        parts.append("no GPU run recorded yet (see the status page)")
    return "; ".join(parts)


def runtime_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    for f in RECORDS.values():  # a new record rebuilds the pages that quote it
        env.note_dependency(str(DATA / f))
    try:
        return [nodes.Text(runtime_text(text.strip(), load_records()))], []
    except KeyError as err:
        msg = inliner.reporter.error(str(err), line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]


class RunRecords(Directive):
    """A table of the recorded runs: date, hardware, versions, outcome and seconds per chapter."""

    def run(self):
        env = self.state.document.settings.env
        for f in RECORDS.values():
            env.note_dependency(str(DATA / f))
        records = load_records()
        if "cpu" not in records:
            return [self.state_machine.reporter.error("book/data/run_cpu.json is missing", line=self.lineno)]
        chapters = sorted({c for r in records.values() for c in r["notebooks"]})
        head = ["", *[("CPU" if k == "cpu" else "GPU") for k in records]]
        rows = [
            ["recorded", *[r["date"] for r in records.values()]],
            ["hardware", *[r["hardware"] for r in records.values()]],
            ["torch, PyTorch3D", *[f"{r['torch']}, {r['pytorch3d']}" for r in records.values()]],
            ["command", *[r["command"] for r in records.values()]],
            [
                "passed / failed / skipped",
                *[f"{r['passed']} / {r['failed']} / {r['skipped']}" for r in records.values()],
            ],
            ["whole run (s)", *[f"{r['seconds']:.0f}" for r in records.values()]],
            *[
                [f"{c}.ipynb (s)", *[f"{r['notebooks'].get(c, float('nan')):.1f}" for r in records.values()]]
                for c in chapters
            ],
        ]
        table = nodes.table(classes=["run-records"])
        group = nodes.tgroup(cols=len(head))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in head)
        thead, tbody = nodes.thead(), nodes.tbody()
        group += thead
        group += tbody
        for parent, cells in [(thead, head), *[(tbody, r) for r in rows]]:
            row = nodes.row()
            for cell in cells:
                entry = nodes.entry()
                entry += nodes.paragraph(text=str(cell))
                row += entry
            parent += row
        return [table]


def setup(app):
    app.add_role("runtime", runtime_role)
    app.add_directive("run-records", RunRecords)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
