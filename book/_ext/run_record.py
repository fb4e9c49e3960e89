"""Run times from the recorded runs of the test command (``book/data/run_cpu.json``, ``run_gpu.json``).

``{runtime}`04_fitting``` writes how long that chapter's cells took in the recorded CPU run and, when
one is recorded, the GPU run. ``{run-records}`` (a directive) writes a table of both records for the
status page. The records are written by ``tests/record_run.py`` from a real run, never by hand.

A record says what it ran, and the words here say so too: a GPU run recorded before the GPU settings
in use were chosen (``book/data/ch5_gpu_settings.json``, whose date is that choice's) ran an earlier
version of the book, and a run of less than the README's test command cannot meet the target set for
that command.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parent.parent / "data"
RECORDS = {"cpu": "run_cpu.json", "gpu": "run_gpu.json"}
#: The record the GPU settings in use (``FastSettings.GPU``) were chosen from; a test ties the two.
GPU_SETTINGS = "ch5_gpu_settings.json"
#: The README's test command: every unit test and every cell of every chapter.
TEST_COMMAND = "python -m pytest --nbval"


def load_records() -> dict[str, dict]:
    return {k: json.loads((DATA / f).read_text()) for k, f in RECORDS.items() if (DATA / f).exists()}


def gpu_settings_date() -> str | None:
    """When the record that chose the GPU settings in use was made (``None`` when there is none)."""
    path = DATA / GPU_SETTINGS
    return json.loads(path.read_text()).get("date") if path.exists() else None


def _when(date: str) -> datetime.datetime:
    return datetime.datetime.strptime(date, "%Y-%m-%d %H:%M UTC")


def predates_gpu_settings(record: dict, settings_date: str | None) -> bool:
    """Whether ``record`` was made before the GPU settings in use were chosen, so with an earlier book."""
    return settings_date is not None and _when(record["date"]) < _when(settings_date)


# pytest options that take the next word as their value (not a path that would select some tests)
_VALUED = {"-p", "-o", "-W", "--durations", "--junitxml", "--basetemp", "--rootdir", "--nbval-kernel-name"}
_SELECTING = ("-k", "-m", "--deselect", "--ignore", "--lf", "--last-failed", "-x", "--exitfirst", "--maxfail")


def is_whole_test_command(record: dict) -> bool:
    """Whether ``record`` ran the README's test command: ``make test``, or ``pytest --nbval`` (as
    ``python -m`` or not) with options that select nothing: no paths, no ``-k``, no stopping early."""
    words = record["command"].split()
    if words == ["make", "test"]:
        return True
    while words and words[0] in ("python", "python3", "-m"):
        words = words[1:]
    if not words or words[0] != "pytest" or "--nbval" not in words:
        return False
    rest, skip = words[1:], False
    for word in rest:
        if skip:
            skip = False
        elif word.startswith(_SELECTING) or not word.startswith("-"):
            return False
        else:
            skip = word in _VALUED
    return True


# The role's words in each edition (the zh-TW edition is built with language "zh_TW").
WORDS = {
    "en": {
        "under": "under 10 s", "s": "about {:.0f} s", "min": "about {:.0f} min",
        "run": "{time} on {hardware} (recorded {date})", "gpu_run": "{time} on an {hardware} (recorded {date})",
        "gpu_run_old": "{time} on an {hardware} (recorded {date}, with an earlier version of the book; not yet re-run)",
        "no_gpu": "no GPU run recorded yet (see the status page)", "join": "; ",
        "met": "met", "missed": "missed",
        "outcome": "{verdict}: {passed} passed, {failed} failed in {seconds:.0f} s on an {hardware} (recorded {date})",
        "old": "; it ran an earlier version of the book, before the current GPU settings, and has not been re-run",
        "part": "not judged: the recorded GPU run ran only part of the test command (the status page says which); "
                "{passed} passed, {failed} failed in {seconds:.0f} s on an {hardware} (recorded {date})",
        "no_run": "not measured yet: no GPU run is recorded",
    },
    "zh_TW": {
        "under": "不到 10 秒", "s": "約 {:.0f} 秒", "min": "約 {:.0f} 分鐘",
        "run": "在 {hardware} 上{time}（{date} 紀錄）", "gpu_run": "在 {hardware} 上{time}（{date} 紀錄）",
        "gpu_run_old": "在 {hardware} 上{time}（{date} 以本書較早的版本紀錄；尚未重新執行）",
        "no_gpu": "尚無 GPU 執行紀錄（見建置狀態頁）", "join": "；",
        "met": "達成", "missed": "未達成",
        "outcome": "{verdict}：在 {hardware} 上 {passed} 項通過、{failed} 項失敗，共 {seconds:.0f} 秒（{date} 紀錄）",
        "old": "；該次執行用的是本書較早的版本，早於目前的 GPU 設定，之後尚未重新執行",
        "part": "未評定：紀錄的 GPU 執行只跑了測試指令的一部分（見建置狀態頁）；"
                "在 {hardware} 上 {passed} 項通過、{failed} 項失敗，共 {seconds:.0f} 秒（{date} 紀錄）",
        "no_run": "尚未量測：還沒有 GPU 執行紀錄",
    },
}  # fmt: skip


def duration(seconds: float, words: dict) -> str:
    if seconds < 10:
        return words["under"]
    if seconds < 90:
        return words["s"].format(seconds)
    return words["min"].format(seconds / 60)


def runtime_text(
    chapter: str, records: dict[str, dict], language: str | None = "en", settings_date: str | None = None
) -> str:
    """The chapter's run time in the recorded runs; ``settings_date`` is ``gpu_settings_date()``."""
    words = WORDS.get(language or "en", WORDS["en"])
    cpu = records.get("cpu")
    if cpu is None or chapter not in cpu["notebooks"]:
        raise KeyError(f"no recorded CPU run of {chapter} in book/data/run_cpu.json (see tests/record_run.py)")
    parts = [words["run"].format(time=duration(cpu["notebooks"][chapter], words), hardware=cpu["hardware"],
                                 date=cpu["date"][:10])]  # fmt: skip
    gpu = records.get("gpu")
    if gpu and chapter in gpu["notebooks"]:
        key = "gpu_run_old" if predates_gpu_settings(gpu, settings_date) else "gpu_run"
        parts.append(words[key].format(time=duration(gpu["notebooks"][chapter], words),
                                       hardware=gpu["hardware"], date=gpu["date"][:10]))  # fmt: skip
    else:
        parts.append(words["no_gpu"])
    return words["join"].join(parts)


def runtime_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    for f in [*RECORDS.values(), GPU_SETTINGS]:  # a new record rebuilds the pages that quote it
        env.note_dependency(str(DATA / f))
    try:
        text = runtime_text(text.strip(), load_records(), env.config.language, gpu_settings_date())
        return [nodes.Text(text)], []
    except KeyError as err:
        msg = inliner.reporter.error(str(err), line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]


#: The test command on a GPU: no failures, and the whole run within this many seconds.
GPU_TEST_LIMIT_S = 120


def gpu_test_verdict(records: dict[str, dict], language: str | None = "en", settings_date: str | None = None) -> str:
    """Whether the recorded GPU run met its target (the whole test command, 0 failures within ``GPU_TEST_LIMIT_S``),
    and its outcome; a run of part of the command is not judged, and one made before the GPU settings in use
    (``settings_date``, from ``gpu_settings_date()``) says so."""
    words = WORDS.get(language or "en", WORDS["en"])
    gpu = records.get("gpu")
    if gpu is None:
        return words["no_run"]
    facts = dict(passed=gpu["passed"], failed=gpu["failed"], seconds=gpu["seconds"], hardware=gpu["hardware"],
                 date=gpu["date"][:10])  # fmt: skip
    if not is_whole_test_command(gpu):
        text = words["part"].format(**facts)
    else:
        met = gpu["failed"] == 0 and gpu["seconds"] <= GPU_TEST_LIMIT_S
        text = words["outcome"].format(verdict=words["met" if met else "missed"], **facts)
    return text + (words["old"] if predates_gpu_settings(gpu, settings_date) else "")


def gpu_test_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    env.note_dependency(str(DATA / RECORDS["gpu"]))
    env.note_dependency(str(DATA / GPU_SETTINGS))
    text = gpu_test_verdict(load_records(), env.config.language, gpu_settings_date())
    return [nodes.Text(text)], []


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


def record_notes(records: dict[str, dict], settings_date: str | None = None) -> list[str]:
    """Sentences under the table: what is missing, what failed, what a record ran (`code` in backticks)."""
    notes = []
    for key, r in records.items():
        if r["failed"]:
            # no counts in the sentence (the table has them), so its translation stays valid
            notes.append(f"Some tests failed in the recorded {LABELS.get(key, key)} run: the table gives the count.")
        if not is_whole_test_command(r):
            notes.append(
                f"The recorded {LABELS.get(key, key)} run ran only part of the test command (its command row says "
                f"which part), so its counts and its whole-run time are not those of `{TEST_COMMAND}`."
            )
        if key == "gpu" and predates_gpu_settings(r, settings_date):
            notes.append(
                "The GPU run was recorded before the GPU settings in use were chosen (the record they were chosen "
                f"from, `book/data/{GPU_SETTINGS}`, is later), so it ran an earlier version of the book; it has not "
                "been re-run since, and its times are those of that version."
            )
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
        for f in [*RECORDS.values(), GPU_SETTINGS]:
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
        notes = record_notes(records, gpu_settings_date())
        return [table, *[paragraph_with_code(note) for note in notes]]


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
