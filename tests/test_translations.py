"""The zh-TW edition: every message translated (none fuzzy), markup intact, Taiwan's usage, notebooks current.

The messages are extracted from the English sources here, every time, so a changed English
paragraph fails this test until its translation is updated (``python book/_ext/translations.py
update`` marks it fuzzy or new in ``locales/zh_TW``).
"""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import translations  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def pot_dir(tmp_path_factory):
    """Message templates of the current English sources (nothing executed; captions from metadata)."""
    return translations.extract(tmp_path_factory.mktemp("gettext"))


def read_catalog(path):
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        return read_po(f, locale=translations.LANGUAGE)


def required_messages(pot_dir) -> dict[str, set[str]]:
    """``{page: messages}``: every message of every page's template."""
    return {page: {m.id for m in read_catalog(pot) if m.id} for page, pot in translations.templates(pot_dir).items()}


def test_every_message_is_translated_and_none_is_fuzzy(pot_dir):
    problems = []
    for page, messages in required_messages(pot_dir).items():
        path = translations.CATALOGS / f"{page}.po"
        if not path.exists():
            problems.append(f"{page}: no catalog {path.relative_to(ROOT)}")
            continue
        catalog = {m.id: m for m in read_catalog(path) if m.id}
        for message in sorted(messages):
            entry = catalog.get(message)
            if entry is None or not entry.string:
                problems.append(f"{page}: untranslated: {message[:90]!r}")
            elif entry.fuzzy:
                problems.append(f"{page}: fuzzy: {message[:90]!r}")
    assert not problems, f"{len(problems)} messages need work (python book/_ext/translations.py update):\n" + "\n".join(
        problems[:60]
    )


ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
CODE = re.compile(r"(?<![`{}\w])`([^`]+)`")
MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$", re.S)
URL = re.compile(r"\]\(([^)\s]+)\)")


def markup(text: str) -> dict[str, list[str]]:
    """What a translation must keep: role targets, inline code, maths and link targets, in any order."""

    def role_target(name, content):
        if name.startswith("glue") or name in ("cite", "cite:p", "cite:t", "runtime", "numref", "eq", "math"):
            return f"{{{name}}}{content}"
        m = re.search(r"<([^>]+)>\s*$", content)  # {term}`translated words <glossary term>`
        return f"{{{name}}}{m.group(1) if m else content}"

    return {
        "roles": sorted(role_target(*m.groups()) for m in ROLE.finditer(text)),
        "code": sorted(CODE.findall(ROLE.sub("", text))),
        "maths": sorted(MATH.findall(ROLE.sub("", text))),
        "links": sorted(URL.findall(text)),
    }


@pytest.mark.parametrize("path", sorted(translations.CATALOGS.glob("**/*.po")), ids=lambda p: p.stem)
def test_translations_keep_the_markup(path):
    problems = []
    for m in read_catalog(path):
        if not m.id or not m.string:
            continue
        english, chinese = markup(m.id), markup(m.string)
        for kind in english:
            if english[kind] != chinese[kind]:
                problems.append(f"{kind}: {english[kind]} became {chinese[kind]} in {m.id[:70]!r}")
    assert not problems, "\n".join(problems)


# Simplified characters and mainland usage that a Taiwanese reader would notice.
NOT_TAIWAN = {
    # Simplified characters
    "这": "這", "们": "們", "个": "個", "为": "為", "数据": "資料", "软件": "軟體", "视频": "影片",
    "图像": "影像", "优化": "最佳化", "默认": "預設", "网络": "網路", "采样": "取樣",
    # mainland usage in Traditional characters
    "數據": "資料", "默認": "預設", "優化": "最佳化", "信息": "資訊", "網絡": "網路", "軟件": "軟體",
    "硬件": "硬體", "視頻": "影片", "圖像": "影像", "質量": "品質", "內存": "記憶體", "程序": "程式",
    "代碼": "程式碼", "文件夾": "資料夾", "分辨率": "解析度", "采樣": "取樣", "顯卡": "GPU",
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(translations.CATALOGS.glob("**/*.po")), ids=lambda p: p.stem)
def test_translations_use_taiwan_usage(path):
    found = [
        f"{word!r} (Taiwan: {NOT_TAIWAN[word]!r}) in {m.string[:60]!r}"
        for m in read_catalog(path)
        if m.string
        for word in NOT_TAIWAN
        if word in m.string
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_translated_notebook_is_generated_from_the_catalogs(path):
    committed = translations.NOTEBOOKS_OUT / path.name
    assert committed.exists(), f"missing {committed}: run python book/_ext/translations.py notebooks"
    expected = translations.notebook_text(translations.translated_notebook(path))
    assert committed.read_text() == expected, f"{committed.name} is stale: python book/_ext/translations.py notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_translated_notebook_has_the_same_code(path):
    english = json.loads(path.read_text())["cells"]
    chinese = json.loads((translations.NOTEBOOKS_OUT / path.name).read_text())["cells"]
    assert [c["cell_type"] for c in english] == [c["cell_type"] for c in chinese]
    for i, (en, zh) in enumerate(zip(english, chinese, strict=True)):
        if en["cell_type"] == "code":
            assert en["source"] == zh["source"], f"code cell {i} differs"
            assert en.get("metadata", {}).get("tags") == zh.get("metadata", {}).get("tags")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_translation_reaches_the_notebook(path):
    """A message the notebook generator cannot place would leave English in the Colab copy."""
    page = path.relative_to(ROOT).with_suffix("").as_posix()
    table = translations.translations(page)
    used = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            used |= translations.translate_markdown("".join(cell["source"]), table)[1]
        caption = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption")
        if caption:
            used |= translations.translate_markdown(caption, table)[1]
    missing = sorted(set(table) - used)
    assert not missing, f"{len(missing)} messages not found in {path.name}:\n" + "\n".join(m[:90] for m in missing)


def test_the_generator_replaces_whole_blocks_only():
    table = {"Fitting the grid": "擬合網格", "the grid": "網格"}
    text, used = translations.translate_markdown("# Fitting the grid\n\nWe fit\nthe grid.\n", table)
    assert text == "# 擬合網格\n\nWe fit\nthe grid.\n" and used == {"Fitting the grid"}
    text, _ = translations.translate_markdown(
        "- We fit\n  the grid by descent\n", {"We fit the grid by descent": "下降"}
    )
    assert text == "- 下降\n"


def test_the_language_switch_leads_to_the_same_page_in_the_other_edition():
    import editions

    site = {"en": Path("/site"), "zh_TW": Path("/site/zh-tw")}
    for page in ("book/index", "notebooks/04_fitting", "search"):
        for language, other in (("en", "zh_TW"), ("zh_TW", "en")):
            here = site[language] / page
            target = (here.parent / editions.switch_href(page, language)).resolve()
            assert target == (site[other] / page).with_suffix(".html"), (page, language)
