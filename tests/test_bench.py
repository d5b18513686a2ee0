"""samlib.bench: a grid of notebook runs, skipped when unchanged, failures recorded without losing others."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from samlib.bench import load_benchmark, run_benchmark

pytestmark = pytest.mark.notebook


def _tiny_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('x = 1\nmodel = "teaching"\nout_json = None')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json\n"
        'if x < 0:\n    raise ValueError("x must be >= 0")\n'
        'json.dump({"chapter": "tiny", "results": {"double": {"value": 2.0 * x}}}, open(out_json, "w"))'
    )
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _bench(tmp_path: Path, xs: list[int]) -> Path:
    _tiny_notebook(tmp_path / "tiny.ipynb")
    spec = tmp_path / "grid.toml"
    spec.write_text(f'name = "grid"\n[[run]]\nnotebook = "tiny.ipynb"\nmodels = ["teaching"]\n'
                    f"[run.parameters]\nx = {xs}\n")  # fmt: skip
    return spec


def test_grid_runs_then_skips_when_unchanged(tmp_path: Path) -> None:
    spec = _bench(tmp_path, [1, 3])
    assert len(load_benchmark(spec)[1]) == 2
    first = run_benchmark(spec, tmp_path / "out", progress=False)
    assert [r["status"] for r in first] == ["ok", "ok"] and not any(r["skipped"] for r in first)
    values = [
        json.loads((tmp_path / "out" / "grid" / r["run_id"] / "metrics.json").read_text()) for r in first
    ]
    assert [v["results"]["double"]["value"] for v in values] == [2.0, 6.0]
    assert all(r["checkpoint_sha256"] not in ("", "missing") and r["wall_time_s"] > 0 for r in first)
    table = (tmp_path / "out" / "grid" / "table.md").read_text()
    assert "double.value" in table and "| 6 |" in table
    second = run_benchmark(spec, tmp_path / "out", progress=False)
    assert all(r["skipped"] for r in second)
    (tmp_path / "tiny.ipynb").write_text(
        (tmp_path / "tiny.ipynb").read_text().replace("2.0 * x", "2.0 * x + 0")
    )
    third = run_benchmark(spec, tmp_path / "out", progress=False)  # the notebook changed: both run again
    assert not any(r["skipped"] for r in third)


def test_failing_run_is_reported_and_others_kept(tmp_path: Path) -> None:
    spec = _bench(tmp_path, [-1, 2])
    records = run_benchmark(spec, tmp_path / "out", progress=False)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "x must be >= 0" in records[0]["error"]
    rerun = run_benchmark(spec, tmp_path / "out", progress=False)
    assert [r["skipped"] for r in rerun] == [False, True]  # the failed one is retried, the good one kept
