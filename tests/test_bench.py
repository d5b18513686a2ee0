"""samlib.bench: a grid of notebook runs, skipped when unchanged, failures recorded without losing others;
its tables; benchmarks/smoke.toml covers the book; the results page reads what the runner writes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from samlib.bench import ROOT, load_benchmark, run_benchmark, write_table

sys.path.insert(0, str(ROOT / "scripts"))
import book_results  # noqa: E402


def _write_notebook(path: Path, parameters: str, body: str) -> None:
    """A two-cell notebook: a tagged ``parameters`` cell and ``body``, kernel python3."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _tiny_notebook(path: Path) -> None:
    _write_notebook(
        path,
        'x = 1\nmodel = "teaching"\nout_json = None',
        "import json\n"
        'if x < 0:\n    raise ValueError("x must be >= 0")\n'
        'json.dump({"chapter": "tiny", "results": {"double": {"value": 2.0 * x}}}, open(out_json, "w"))',
    )


def _bench(tmp_path: Path, xs: list[int]) -> Path:
    _tiny_notebook(tmp_path / "tiny.ipynb")
    spec = tmp_path / "grid.toml"
    spec.write_text(f'name = "grid"\n[[run]]\nnotebook = "tiny.ipynb"\nmodels = ["teaching"]\n'
                    f"[run.parameters]\nx = {xs}\n")  # fmt: skip
    return spec


@pytest.mark.notebook
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


@pytest.mark.notebook
def test_failing_run_is_reported_and_others_kept(tmp_path: Path) -> None:
    spec = _bench(tmp_path, [-1, 2])
    records = run_benchmark(spec, tmp_path / "out", progress=False)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "x must be >= 0" in records[0]["error"]
    rerun = run_benchmark(spec, tmp_path / "out", progress=False)
    assert [r["skipped"] for r in rerun] == [False, True]  # the failed one is retried, the good one kept


def _parameters_cell(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def test_smoke_benchmark_covers_every_chapter_with_three_seeds() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [
        c["file"] for part in toc["parts"] for c in part["chapters"] if c["file"].startswith("notebooks/")
    ]
    name, runs = load_benchmark(ROOT / "benchmarks" / "smoke.toml")
    assert name == "smoke" and {r.model for r in runs} == {"teaching"}
    assert all(r.parameters.get("smoke") is True for r in runs)
    for file in files:
        notebook = ROOT / f"{file}.ipynb"
        mine = [r for r in runs if r.notebook == notebook]
        has_seed = any(line.startswith("seed =") for line in _parameters_cell(notebook).splitlines())
        seeds = sorted(r.parameters.get("seed", -1) for r in mine)
        assert seeds == ([0, 1, 2] if has_seed else [-1]), f"{file}: runs with seeds {seeds}"
    assert len({r.run_id for r in runs}) == len(runs)


def _record(run_id: str, seed: int, status: str = "ok") -> dict:
    params = {"seed": seed, "smoke": True}
    return {"run_id": run_id, "notebook": "c.ipynb", "model": "teaching", "parameters": params,
            "status": status, "wall_time_s": 1.25, "peak_rss_mb": 99.6}  # fmt: skip


def test_tables_are_long_csv_and_one_markdown_section_per_notebook(tmp_path: Path) -> None:
    for run_id, value in [("c--a", 0.5), ("c--b", 0.25)]:
        (tmp_path / run_id).mkdir()
        doc = {"chapter": "c", "results": {"m": {"miou": value, "objects": 3.0}}}
        (tmp_path / run_id / "metrics.json").write_text(json.dumps(doc))
    write_table(tmp_path, [_record("c--a", 0), _record("c--b", 1), _record("c--f", 2, "failed")])
    with open(tmp_path / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["metric"], r["value"]) for r in rows] == [
        ("c--a", "miou", "0.5"), ("c--a", "objects", "3"), ("c--b", "miou", "0.25"), ("c--b", "objects", "3"),
        ("c--f", "", ""),
    ]  # fmt: skip
    assert rows[-1]["status"] == "failed" and rows[0]["notebook"] == "c" and rows[0]["peak_rss_mb"] == "100"
    md = (tmp_path / "table.md").read_text().splitlines()
    assert "## c" in md and "| method.metric | seed=0 | seed=1 | seed=2 |" in md
    assert "| m.miou | 0.5 | 0.25 | – |" in md
    assert '| seed=2 (`c--f`) | teaching | `{"seed": 2, "smoke": true}` | failed | 1.2 | 100 |' in md


def test_only_small_files_of_a_run_are_committed(tmp_path: Path) -> None:
    bench = ROOT / "results" / "bench" / "smoke" / "00_x--teaching--0123456789"
    paths = [bench / n for n in ("00_x.ipynb", "papermill.log", "metrics.json", "provenance.json")]
    paths += [bench.parent / "table.md", bench.parent / "table.csv"]
    rel = [str(p.relative_to(ROOT)) for p in paths]
    out = subprocess.run(
        ["git", "check-ignore", "--no-index", *rel], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode == 128:  # not a git checkout (e.g. an unpacked archive)
        pytest.skip(out.stderr.strip())
    assert sorted(out.stdout.split()) == sorted(rel[:2])


def _seeded_notebook(path: Path) -> None:
    _write_notebook(
        path,
        'seed = 0\nsmoke = True\nmodel = "teaching"\nout_json = None',
        "import json\n"
        'if seed == 2:\n    raise RuntimeError("seed 2 breaks")\n'
        'res = {"ours": {"miou": 0.5 + 0.1 * (seed == 0)}, "base": {"miou": 0.55}}\n'
        'json.dump({"chapter": "07_tiny", "setting": "smoke", "device": "cpu", "results": res}, '
        'open(out_json, "w"))',
    )


@pytest.mark.notebook
def test_results_page_section_from_the_runner_output(tmp_path: Path) -> None:
    _seeded_notebook(tmp_path / "07_tiny.ipynb")
    spec = tmp_path / "smoke.toml"
    spec.write_text('name = "smoke"\n[[run]]\nnotebook = "07_tiny.ipynb"\nmodels = ["teaching"]\n'
                    "[run.parameters]\nsmoke = true\nseed = [0, 1, 2]\n")  # fmt: skip
    records = run_benchmark(spec, tmp_path / "bench", progress=False)
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    claim = {"text": "ours wins", "paper_number": "-", "metric": "miou", "ours": "ours", "baseline": ["base"]}
    chapters = [{"chapter": "07_tiny", "short": "tiny", "title": "t", "paper": "p", "claim": claim}]
    section = book_results.bench_section(chapters, tmp_path / "bench" / "smoke")
    assert section.startswith("Benchmark `smoke`: 3 runs, 2 finished, 1 failed; model `teaching`")
    claims_row = next(line for line in section.splitlines() if line.startswith("| tiny |"))
    assert "| 0.600 vs 0.550 (holds) | 0.500 vs 0.550 (does not hold) | **failed** |" in claims_row
    assert claims_row.endswith("| **1 of 3** seeds (1 failed) |")
    assert "| `07_tiny` | 2 |" in section and "- `07_tiny` seed 2 (failed): " in section
    assert "seed 2 breaks" in section
    sha = book_results.load_bench(tmp_path / "bench" / "smoke")[0]["checkpoint_sha256"]
    assert f"`{sha[:12]}`" in section


def test_checkpoint_sha256_finds_each_kind_of_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from samlib.bench import checkpoint_sha256
    from samlib.models import checkpoint_path, sha256_file
    from samlib.teaching.model import TEACHING_CHECKPOINT

    monkeypatch.setenv("SAMLIB_CACHE", str(tmp_path / "cache"))
    assert checkpoint_sha256("vit_b") == "missing"
    # an official checkpoint is read where load_sam downloads it to
    official = checkpoint_path("vit_b")
    official.parent.mkdir(parents=True)
    official.write_bytes(b"weights")
    assert checkpoint_sha256("vit_b") == hashlib.sha256(b"weights").hexdigest()
    own = tmp_path / "mine.pt"
    own.write_bytes(b"other weights")
    assert checkpoint_sha256(str(own)) == hashlib.sha256(b"other weights").hexdigest()
    assert checkpoint_sha256("teaching") == sha256_file(TEACHING_CHECKPOINT)
