"""Every chapter runs headless in its smoke setting and records metrics in the shared schema.

The fast checks (table of contents, committed-without-outputs, a tagged ``parameters`` cell) run
always; the papermill runs are marked ``notebook`` (deselect with ``-m "not notebook"``).
Chapter-specific assertions live in per-chapter test files that reuse ``run_notebook``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import NOTEBOOK_DIR, ROOT, notebook_names, run_notebook  # noqa: E402

NAMES = notebook_names()
REQUIRED_PARAMETERS = ("smoke", "data_root", "out_json", "model")


def _toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def test_toc_entries_exist() -> None:
    missing = [
        f for f in _toc_files() if not any((ROOT / f"{f}{ext}").exists() for ext in ("", ".md", ".ipynb"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_in_toc(name: str) -> None:
    assert f"notebooks/{name}" in _toc_files(), f"add `- file: notebooks/{name}` to _toc.yml"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_committed_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not with_outputs, f"{name}: clear outputs before committing (cells {with_outputs[:5]})"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one code cell tagged 'parameters'"
    source = tagged[0].source
    for param in REQUIRED_PARAMETERS:
        assert f"{param} =" in source or f"{param}=" in source, f"{name}: parameter {param!r} missing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{name}: kernel must be python3"


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.notebook
@pytest.mark.parametrize("name", NAMES)
def test_notebook_smoke_run(name: str) -> None:
    record = run_notebook(name, smoke=True)
    assert record["chapter"] == name
    assert record["setting"] == "smoke"
    assert record.get("device"), "device missing from the record"
    results = record["results"]
    assert isinstance(results, dict) and results, "results must be a non-empty {method: {metric: value}}"
    for method, metrics in results.items():
        assert isinstance(metrics, dict) and metrics, f"{method}: no metrics"
        numbers = [v for v in metrics.values() if _finite_number(v)]
        assert numbers, f"{method}: no finite numeric metric in {metrics}"
