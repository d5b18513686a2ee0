"""Every measured number in a chapter's prose comes from the run (the "numbers rule").

A chapter's Markdown cells must not contain a decimal number (``0.21``, ``+0.067``, ``58.06``) that
a reader could take for a measurement, unless it is one of these (checked without executing):

1. **Glued or code.** Inside a ``{glue:...}`` role, inline code (backticks), a fenced code block, a
   URL or a Markdown link target. Numbers the run measures are glued (``myst_nb.glue``) or printed by
   a code cell (``IPython.display.Markdown``), never typed.
2. **Cited.** Inside a sentence that names its source: it contains one of :data:`CITATION_WORDS`
   (``paper``, ``report``, ``arXiv``, ``et al``; case-insensitive). A table row counts as cited
   when the row itself or the table's header row contains one of them, e.g. a column ``paper``.
3. **Thresholds.** A number written right after ``≥`` or ``≤`` (``IoU ≥ 0.5``) is a threshold the
   text defines, not a result.
4. **Parameters documentation.** The first Markdown cell after the code cell tagged ``parameters``
   (it lists the full setting: learning rates, thresholds and the like are settings, not results).

Integers are not checked (counts, sizes, seeds are everywhere in prose), but the rule applies to
them too: an integer that the run measures must be glued as well. The rule is also stated in the
README's contributing notes. Every notebook under ``notebooks/`` is checked, so a chapter added
later is covered without editing this file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import NOTEBOOK_DIR, notebook_names  # noqa: E402

CITATION_WORDS = ("paper", "report", "arxiv", "et al")
DECIMAL = re.compile(r"(?<![\w.])[-+−±]?\d+\.\d+(?![\w.]*\d)")
_EXEMPT_SPANS = [
    re.compile(r"```.*?```", re.S),  # fenced code
    re.compile(r"\{glue(?::\w+)?\}`[^`]*`"),  # {glue}`name` / {glue:text}`name:.3f`
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"https?://\S+"),  # bare URLs
    re.compile(r"<[^>\n]+>"),  # HTML tags / attributes
    re.compile(r"[≥≤]\s*[-+]?\d+(?:\.\d+)?"),  # thresholds: IoU ≥ 0.5
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*(\[`{$])")


def _strip_exempt(text: str) -> str:
    for pattern in _EXEMPT_SPANS:
        text = pattern.sub(" ", text)
    return text


def _cites(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in CITATION_WORDS)


def uncited_decimals(markdown: str) -> list[str]:
    """Decimal numbers in ``markdown`` that the numbers rule does not allow.

    Arguments:
      markdown (str): the source of one Markdown cell.

    Returns:
      (list[str]): one entry per offending number, "number: the sentence or table row it is in".
    """
    found: list[str] = []
    text = _strip_exempt(markdown)
    lines = text.split("\n")
    prose: list[str] = []
    header: str | None = None  # the current table's header row
    for k, line in enumerate(lines):
        if line.lstrip().startswith("|"):
            is_header = (
                header is None and k + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|?\s*$", lines[k + 1])
            )
            if header is None:
                header = line if is_header else ""
            if not (_cites(line) or _cites(header)):
                found += [f"{m.group()}: {line.strip()}" for m in DECIMAL.finditer(line)]
            prose.append("")
        else:
            header = None
            prose.append(line)
    for paragraph in re.split(r"\n\s*\n", "\n".join(prose)):
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            if not _cites(sentence):
                found += [f"{m.group()}: {sentence.strip()[:160]}" for m in DECIMAL.finditer(sentence)]
    return found


def _exempt_cells(nb: nbformat.NotebookNode) -> set[int]:
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            after = [j for j in range(i + 1, len(cells)) if cells[j].cell_type == "markdown"]
            return {after[0]} if after else set()
    return set()


@pytest.mark.parametrize("name", notebook_names())
def test_chapter_prose_has_no_typed_measurements(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    skip = _exempt_cells(nb)
    bad = [
        f"cell {i}: {hit}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown" and i not in skip
        for hit in uncited_decimals(cell.source)
    ]
    assert not bad, (
        f"{name}: decimal numbers typed into the prose (glue them, print them from code, or cite the "
        "paper in the same sentence / table header; see tests/test_prose_numbers.py):\n" + "\n".join(bad)
    )


@pytest.mark.parametrize(
    ("markdown", "n_bad"),
    [
        ("GeoSAM scored 0.21 road IoU here.", 1),
        ("The paper reports 0.21 road IoU.", 0),
        ("We gain {glue:text}`gain:+.3f` mIoU.", 0),
        ("Run `pip install torch==2.13.0` first.", 0),
        ("See [the paper](https://arxiv.org/abs/2304.02643).", 0),
        ("| method | miou |\n|---|---:|\n| ours | 0.52 |", 1),
        ("| method | paper mIoU |\n|---|---:|\n| PointSAM | 66.66 |", 0),
        ("Seeds 0, 1 and 2 give 5 of 6 wins.", 0),
        ("p50 counts objects with IoU ≥ 0.5 as found.", 0),
        ("It is small. The decoder lost 0.01 to 0.02 mIoU. Liu et al. report 58.06.", 2),
    ],
)
def test_rule_on_examples(markdown: str, n_bad: int) -> None:
    assert len(uncited_decimals(markdown)) == n_bad, uncited_decimals(markdown)
