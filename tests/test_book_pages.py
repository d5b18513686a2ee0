"""The book's own pages: the chapter registry (book/claims.yml), the claims rule, the compact tables,
the table of contents and the offline configuration (no execution, no browser)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_results as B  # noqa: E402
from notebook_runner import notebook_names  # noqa: E402

CLAIM = {"text": "x", "paper_number": "y", "metric": "miou", "ours": "m_a", "baseline": ["b_a", "c_a"]}


def _record(results: dict) -> dict:
    return {"chapter": "c", "setting": "smoke", "device": "cpu", "results": results}


def test_claim_holds_against_the_best_baseline() -> None:
    rec = _record({"m_a": {"miou": 0.5}, "b_a": {"miou": 0.3}, "c_a": {"miou": 0.45}})
    out = B.evaluate_claim(CLAIM, rec)
    assert out["verdict"] == "holds" and out["baseline_key"] == "c_a"
    assert out["delta"] == pytest.approx(0.05)


def test_claim_does_not_hold_when_a_baseline_is_as_good() -> None:
    rec = _record({"m_a": {"miou": 0.5}, "b_a": {"miou": 0.5}, "c_a": {"miou": 0.1}})
    assert B.evaluate_claim(CLAIM, rec)["verdict"] == "does not hold"
    assert B.evaluate_claim({**CLAIM, "margin": -0.01}, rec)["verdict"] == "holds"


def test_claim_not_measured_without_file_or_key() -> None:
    assert B.evaluate_claim(CLAIM, None)["verdict"] == B.NOT_MEASURED
    rec = _record({"m_a": {"miou": 0.5}, "b_a": {"miou": 0.3}})  # c_a absent
    assert B.evaluate_claim(CLAIM, rec)["verdict"] == B.NOT_MEASURED
    rec = _record({"m_a": {"f1": 0.5}, "b_a": {"miou": 0.3}, "c_a": {"miou": 0.3}})  # metric absent
    assert B.evaluate_claim(CLAIM, rec)["verdict"] == B.NOT_MEASURED


def test_claims_table_has_one_row_per_chapter() -> None:
    chapters = B.load_chapters()
    table = B.claims_table(chapters, {}, {})
    body = table.splitlines()[2:]
    assert len(body) == len(chapters)
    assert all("not measured" in row for row in body)


def test_every_chapter_notebook_is_in_the_registry() -> None:
    registered = {e["chapter"] for e in B.load_chapters()}
    missing = set(notebook_names()) - registered
    assert not missing, f"add an entry for {sorted(missing)} to book/claims.yml"


def test_registry_charts_stay_small() -> None:
    for entry in B.load_chapters():
        chart = entry["chart"]
        assert len(chart["methods"]) * len(chart["splits"]) <= 12, entry["chapter"]


def test_compact_table_groups_rows_and_formats_counts() -> None:
    results = {
        "prompt_auto": {"iou": 0.7, "objects": 13.0, "masks_per_image": 5.4},
        "prompt_box": {"iou": 0.8, "objects": 13.0},
        "decoder_two_seeds": {"f1": 0.9, "miou": 0.7, "miou_std": 0.01, "seeds": 2.0},
        "decoder_one_seed": {"f1": 0.5, "miou": 0.4, "miou_std": 0.0, "seeds": 1.0},
    }
    md = B.compact_table(results, first=["miou"])
    tables = md.split("\n\n")
    assert len(tables) == 2  # the two kinds of rows share no metric: two tables, no mostly-empty column
    assert tables[0].splitlines()[0] == "| method | iou | objects | masks_per_image |"
    assert "| prompt_box | 0.800 | 13 | – |" in tables[0]
    assert tables[1].splitlines()[0] == "| method | miou | f1 | seeds |"  # key metric first, no std column
    assert "| decoder_two_seeds | 0.700 ± 0.010 | 0.900 | 2 |" in tables[1]
    assert "| decoder_one_seed | 0.400 | 0.500 | 1 |" in tables[1]  # single seed: no std


def test_chart_values_follow_the_templates() -> None:
    chart = {"methods": ["a", "b"], "splits": ["s", "t"], "key": "{method}_{split}", "metric": "miou"}
    res = {"a_s": {"miou": 0.1}, "b_s": {"miou": 0.2}, "a_t": {"miou": 0.3}}
    assert B.chart_values(res, chart) == {"s": {"a": 0.1, "b": 0.2}, "t": {"a": 0.3}}
    chart = {"methods": ["box"], "splits": ["src"], "key": "{method}", "metric": "miou_{split}"}
    assert B.chart_values({"box": {"miou_src": 0.5}}, chart) == {"src": {"box": 0.5}}


def test_landing_page_is_a_top_level_page() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert "/" not in toc["root"], "the root must be a top-level page so _build/html/index.html is the page"


def test_math_and_widgets_are_served_by_the_book() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert not config["mathjax_path"].startswith(("http:", "https:", "//"))
    assert all(not url.startswith(("http:", "https:", "//")) for url in config["nb_ipywidgets_js"])
    assert "_build/vendor" in config["html_static_path"]


def test_densest_window_finds_the_foreground() -> None:
    import numpy as np

    from samlib.errors import InvalidInputError
    from samlib.tiling import densest_window

    mask = np.zeros((100, 120), bool)
    mask[70:90, 90:110] = True
    rows, cols = densest_window(mask, 40)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (40, 40)
    assert mask[rows, cols].sum() == mask.sum()  # the whole object is inside the window
    assert densest_window(mask, None) == (slice(0, 100), slice(0, 120))
    assert densest_window(mask, 500) == (slice(0, 100), slice(0, 120))
    with pytest.raises(InvalidInputError):
        densest_window(np.zeros((2, 3, 4)), 2)


BENCH_CHAPTERS = [
    {"chapter": "01_a", "short": "A", "title": "a", "paper": "p", "claim": CLAIM},
    {"chapter": "02_b", "short": "B", "title": "b", "paper": "p", "claim": {**CLAIM, "baseline": "b_a"}},
    {"chapter": "03_c", "short": "C", "title": "c", "paper": "p", "claim": CLAIM},
]


def _fake_run(bench: Path, chapter: str, seed: int | None, results: dict | None, error: str = "") -> dict:
    """One run folder as samlib.bench writes it (provenance.json, metrics.json when it succeeded)."""
    params = {"smoke": True} if seed is None else {"smoke": True, "seed": seed}
    run_id = f"{chapter}--teaching--s{seed}"
    prov = {
        "run_id": run_id, "notebook": f"{chapter}.ipynb", "model": "teaching", "parameters": params,
        "commit": "0123456789abcdef+dirty", "checkpoint_sha256": "feedbeefcafe0000111122223333",
        "device": "cpu", "key": "k", "wall_time_s": 61.4, "peak_rss_mb": 812.2,
        "status": "failed" if error else "ok", **({"error": error} if error else {}),
    }  # fmt: skip
    (bench / run_id).mkdir(parents=True)
    (bench / run_id / "provenance.json").write_text(json.dumps(prov))
    if results is not None:
        doc = {"chapter": chapter, "setting": "smoke", "device": "cpu", "results": results}
        (bench / run_id / "metrics.json").write_text(json.dumps(doc))
    return prov


def _fake_bench(tmp_path: Path) -> Path:
    from samlib.bench import write_table

    bench = tmp_path / "results" / "bench" / "smoke"
    win = {"m_a": {"miou": 0.6}, "b_a": {"miou": 0.3}, "c_a": {"miou": 0.5}}
    lose = {"m_a": {"miou": 0.4}, "b_a": {"miou": 0.3}, "c_a": {"miou": 0.5}}
    records = [
        _fake_run(bench, "01_a", 0, win),
        _fake_run(bench, "01_a", 1, lose),
        _fake_run(bench, "01_a", 2, None, error="Traceback ...\nValueError: boom `x`"),
        _fake_run(bench, "02_b", None, {"m_a": {"miou": 0.2}}),  # no seed parameter; baseline key absent
    ]
    write_table(bench, records)  # the runner's own table.csv lists the runs of the benchmark
    _fake_run(bench, "01_a", 7, win)  # a folder left from an earlier grid: not in table.csv, not counted
    return bench


def test_load_bench_reads_the_runs_the_table_lists(tmp_path: Path) -> None:
    runs = B.load_bench(_fake_bench(tmp_path))
    assert runs is not None
    assert [(r["chapter"], r["seed"], r["status"]) for r in runs] == [
        ("01_a", 0, "ok"), ("01_a", 1, "ok"), ("01_a", 2, "failed"), ("02_b", None, "ok"),
    ]  # fmt: skip
    assert runs[0]["record"]["results"]["m_a"]["miou"] == 0.6 and runs[2]["record"] is None
    assert B.load_bench(tmp_path / "nowhere") is None


def test_bench_claims_table_counts_seeds_where_the_claim_holds(tmp_path: Path) -> None:
    runs = B.load_bench(_fake_bench(tmp_path))
    lines = B.bench_claims_table(BENCH_CHAPTERS, runs).splitlines()
    head = "| chapter | claim (metric: method vs best baseline) | seed 0 | seed 1 | seed 2 | one run |"
    assert lines[0] == head + " holds in |"
    row_a, row_b, row_c = lines[2:]
    assert "best of `b_a`, `c_a`" in row_a
    assert "| 0.600 vs 0.500 (holds) | 0.400 vs 0.500 (does not hold) | **failed** | – |" in row_a
    assert row_a.endswith("| **1 of 3** seeds (1 failed) |")
    assert "| – | – | – | not measured | **0 of 1** runs (1 not measured) |" in row_b
    assert row_c.endswith("| – | – | – | – | not in this benchmark |")


def test_bench_provenance_table_shows_failed_runs(tmp_path: Path) -> None:
    md = B.bench_provenance_table(B.load_bench(_fake_bench(tmp_path)))
    lines = md.splitlines()
    assert lines[0] == (
        "| chapter | seed | samlib commit | checkpoint sha256 | device | wall time s | peak RSS MB | status |"
    )
    assert "| `01_a` | 0 | `0123456+dirty` | `feedbeefcafe` | cpu | 61 | 812 | ok |" in lines
    assert "| `01_a` | 2 | `0123456+dirty` | `feedbeefcafe` | cpu | 61 | 812 | **failed** |" in lines
    assert "| `02_b` | – |" in md and "s7" not in md
    assert "- `01_a` seed 2 (failed): `ValueError: boom 'x'`" in lines


def test_bench_section_without_a_recorded_benchmark_says_how_to_make_one(tmp_path: Path) -> None:
    text = B.bench_section(BENCH_CHAPTERS, tmp_path / "results" / "bench" / "smoke")
    assert "\n" not in text and "No recorded benchmark" in text and "`make bench`" in text
    section = B.bench_section(BENCH_CHAPTERS, _fake_bench(tmp_path))
    assert section.startswith("Benchmark `smoke`: 4 runs, 3 finished, 1 failed; model `teaching`")
    assert "holds in" in section and "peak RSS MB" in section


def test_results_page_reads_the_committed_smoke_benchmark() -> None:
    page = (ROOT / "book" / "results.md").read_text()
    assert "## Across seeds: the recorded smoke benchmark" in page
    assert 'bench_section(chapters, repo_root() / "results" / "bench" / "smoke")' in page
