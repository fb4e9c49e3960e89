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


# The role's words in each edition (the zh-TW edition is built with language "zh_TW").
WORDS = {
    "en": {
        "under": "under 10 s", "s": "about {:.0f} s", "min": "about {:.0f} min",
        "run": "{time} on {hardware} (recorded {date})", "gpu_run": "{time} on an {hardware} (recorded {date})",
        "no_gpu": "no GPU run recorded yet (see the status page)", "join": "; ",
        "met": "met", "missed": "missed",
        "outcome": "{verdict}: {passed} passed, {failed} failed in {seconds:.0f} s on an {hardware} (recorded {date})",
        "no_run": "not measured yet: no GPU run is recorded",
    },
    "zh_TW": {
        "under": "不到 10 秒", "s": "約 {:.0f} 秒", "min": "約 {:.0f} 分鐘",
        "run": "在 {hardware} 上{time}（{date} 紀錄）", "gpu_run": "在 {hardware} 上{time}（{date} 紀錄）",
        "no_gpu": "尚無 GPU 執行紀錄（見建置狀態頁）", "join": "；",
        "met": "達成", "missed": "未達成",
        "outcome": "{verdict}：在 {hardware} 上 {passed} 項通過、{failed} 項失敗，共 {seconds:.0f} 秒（{date} 紀錄）",
        "no_run": "尚未量測：還沒有 GPU 執行紀錄",
    },
}  # fmt: skip


def duration(seconds: float, words: dict) -> str:
    if seconds < 10:
        return words["under"]
    if seconds < 90:
        return words["s"].format(seconds)
    return words["min"].format(seconds / 60)


def runtime_text(chapter: str, records: dict[str, dict], language: str | None = "en") -> str:
    words = WORDS.get(language or "en", WORDS["en"])
    cpu = records.get("cpu")
    if cpu is None or chapter not in cpu["notebooks"]:
        raise KeyError(f"no recorded CPU run of {chapter} in book/data/run_cpu.json (see tests/record_run.py)")
    parts = [words["run"].format(time=duration(cpu["notebooks"][chapter], words), hardware=cpu["hardware"],
                                 date=cpu["date"][:10])]  # fmt: skip
    gpu = records.get("gpu")
    if gpu and chapter in gpu["notebooks"]:
        parts.append(words["gpu_run"].format(time=duration(gpu["notebooks"][chapter], words),
                                             hardware=gpu["hardware"], date=gpu["date"][:10]))  # fmt: skip
    else:
        parts.append(words["no_gpu"])
    return words["join"].join(parts)


def runtime_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    for f in RECORDS.values():  # a new record rebuilds the pages that quote it
        env.note_dependency(str(DATA / f))
    try:
        return [nodes.Text(runtime_text(text.strip(), load_records(), env.config.language))], []
    except KeyError as err:
        msg = inliner.reporter.error(str(err), line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]


#: The test command on a GPU: no failures, and the whole run within this many seconds.
GPU_TEST_LIMIT_S = 120


def gpu_test_verdict(records: dict[str, dict], language: str | None = "en") -> str:
    """Whether the recorded GPU run met its target (0 failures within ``GPU_TEST_LIMIT_S``), and its outcome."""
    words = WORDS.get(language or "en", WORDS["en"])
    gpu = records.get("gpu")
    if gpu is None:
        return words["no_run"]
    met = gpu["failed"] == 0 and gpu["seconds"] <= GPU_TEST_LIMIT_S
    return words["outcome"].format(
        verdict=words["met" if met else "missed"], passed=gpu["passed"], failed=gpu["failed"],
        seconds=gpu["seconds"], hardware=gpu["hardware"], date=gpu["date"][:10],
    )  # fmt: skip


def gpu_test_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    env.note_dependency(str(DATA / RECORDS["gpu"]))
    return [nodes.Text(gpu_test_verdict(load_records(), env.config.language))], []


LABELS = {"cpu": "CPU", "gpu": "GPU"}


def chapter_label(stem: str) -> str:
    """``04_fitting`` -> ``Chapter 4 (04_fitting)``."""
    number = stem.split("_", 1)[0]
    return f"Chapter {int(number)} ({stem})" if number.isdigit() else stem


def record_rows(records: dict[str, dict]) -> list[list[str]]:
    """The table of the records (first row: the header), one column per record, CPU first."""
    runs = list(records.values())
    chapters = sorted({c for r in runs for c in r["notebooks"]})

    def seconds(r, chapter):
        return f"{r['notebooks'][chapter]:.1f}" if chapter in r["notebooks"] else "not run"

    return [
        ["", *[LABELS.get(k, k) for k in records]],
        ["recorded", *[r["date"] for r in runs]],
        ["hardware", *[r["hardware"] for r in runs]],
        ["torch, PyTorch3D", *[f"{r['torch']}, {r['pytorch3d']}" for r in runs]],
        ["command", *[r["command"] for r in runs]],
        ["tests passed", *[str(r["passed"]) for r in runs]],
        ["tests failed", *[str(r["failed"]) for r in runs]],
        ["tests skipped", *[str(r["skipped"]) for r in runs]],
        ["whole run (seconds)", *[f"{r['seconds']:.0f}" for r in runs]],
        *[[f"{chapter_label(c)}, seconds", *[seconds(r, c) for r in runs]] for c in chapters],
    ]


def record_notes(records: dict[str, dict]) -> list[str]:
    """Sentences under the table: what is missing, and what failed (`code` in backticks)."""
    notes = []
    for key, r in records.items():
        if r["failed"]:
            # no counts in the sentence (the table has them), so its translation stays valid
            notes.append(f"Some tests failed in the recorded {LABELS.get(key, key)} run: the table gives the count.")
    if "gpu" not in records:
        notes.append(
            "No GPU run is recorded yet, so this page cannot say how the tests and the chapters fare "
            "on a GPU. A GPU column appears in this table once `tests/record_run.py` has written "
            "`book/data/run_gpu.json` from a real run of the test command on a GPU."
        )
    return notes


class RunRecords(Directive):
    """A table of the recorded runs (date, hardware, versions, outcome, seconds per chapter), then notes."""

    def run(self):
        env = self.state.document.settings.env
        for f in RECORDS.values():
            env.note_dependency(str(DATA / f))
        records = load_records()
        if "cpu" not in records:
            return [self.state_machine.reporter.error("book/data/run_cpu.json is missing", line=self.lineno)]
        head, *rows = record_rows(records)
        table = nodes.table(classes=["run-records"])
        group = nodes.tgroup(cols=len(head))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in head)
        thead, tbody = nodes.thead(), nodes.tbody()
        group += thead
        group += tbody
        for parent, cells in [(thead, head), *[(tbody, r) for r in rows]]:
            row = nodes.row()
            for i, cell in enumerate(cells):
                entry = nodes.entry()
                text = str(cell)
                is_code = parent is tbody and cells[0] == "command" and i > 0
                entry += nodes.paragraph("", "", nodes.literal(text, text) if is_code else nodes.Text(text))
                row += entry
            parent += row
        return [table, *[paragraph_with_code(note) for note in record_notes(records)]]


def paragraph_with_code(text: str) -> nodes.paragraph:
    """A paragraph of ``text`` whose `backticked` parts are code (as literal text: no smart dashes)."""
    para = nodes.paragraph()
    for i, part in enumerate(text.split("`")):
        if part:
            para += nodes.literal(part, part) if i % 2 else nodes.Text(part)
    return para


def setup(app):
    app.add_role("runtime", runtime_role)
    app.add_role("gpu-test-target", gpu_test_role)
    app.add_directive("run-records", RunRecords)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
