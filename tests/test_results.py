"""The results-file contract: validation, atomic writes, round trip and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samlib import results
from samlib.errors import DataNotFoundError, InvalidInputError


def test_round_trip_with_numpy_values(tmp_path: Path) -> None:
    path = tmp_path / "out" / "ch03.json"
    written = results.write_results(
        path,
        chapter="03-prompts",
        setting="roads-eth/test",
        results={"box": {"mIoU": np.float32(0.5), "n": np.int64(20)}, "point": {"mIoU": torch.tensor(0.25)}},
        device="cpu",
        extra={"seed": np.int64(0), "images": np.array([1, 2])},
    )
    assert written == path
    raw = json.loads(path.read_text())
    assert raw == {
        "chapter": "03-prompts",
        "setting": "roads-eth/test",
        "device": "cpu",
        "results": {"box": {"mIoU": 0.5, "n": 20.0}, "point": {"mIoU": 0.25}},
        "extra": {"seed": 0, "images": [1, 2]},
    }
    assert results.read_results(path) == raw
    assert [p.name for p in path.parent.iterdir()] == ["ch03.json"]  # no temp file left


def test_none_path_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(results.RESULTS_DIR_ENV, raising=False)
    assert results.write_results(None, "c", "s", {"m": {"x": float("nan")}}) is None


def test_none_path_writes_into_the_results_dir_when_set(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(results.RESULTS_DIR_ENV, str(tmp_path / "metrics"))
    written = results.write_results(None, "01_geosam", "smoke", {"geosam": {"miou": 0.5}})
    assert written == tmp_path / "metrics" / "01_geosam.json"
    assert results.read_results(written)["results"] == {"geosam": {"miou": 0.5}}


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"box": {"mIoU": float("nan")}}, r"results\['box'\]\['mIoU'\] is nan"),
        ({"box": {"mIoU": np.inf}}, "inf"),
        ({"box": {"mIoU": "0.5"}}, "must be a number"),
        ({"box": {"mIoU": True}}, "must be a number"),
        ({"": {"mIoU": 0.5}}, "Method names"),
        ({"box": {"": 0.5}}, "Metric names"),
        ({"box": {}}, "non-empty"),
        ({}, "non-empty"),
    ],
)
def test_validation_names_the_culprit(tmp_path: Path, bad: dict, match: str) -> None:
    path = tmp_path / "r.json"
    with pytest.raises(InvalidInputError, match=match):
        results.write_results(path, "c", "s", bad)
    assert not path.exists()


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    results.write_results(path, "c", "s", {"m": {"x": 1.0}})
    before = path.read_text()
    with pytest.raises(InvalidInputError, match="extra"):
        results.write_results(path, "c", "s", {"m": {"x": 2.0}}, extra={"bad": object()})
    assert path.read_text() == before


def test_read_results_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        results.read_results(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text('{"chapter": "c", "setting": "s", "results": {"m": {"x": 1}}}')
    with pytest.raises(InvalidInputError, match="device"):
        results.read_results(p)
    p.write_text('{"chapter": "c", "setting": "s", "device": null, "results": {"m": {"x": "high"}}}')
    with pytest.raises(InvalidInputError, match="must be a number"):
        results.read_results(p)
    p.write_text("not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        results.read_results(p)


def test_results_table() -> None:
    table = results.results_table({"box": {"mIoU": 0.5, "F1": 0.25}, "point": {"mIoU": 0.125}})
    assert table.splitlines() == [
        "| method | mIoU | F1 |",
        "|---|---:|---:|",
        "| box | 0.500 | 0.250 |",
        "| point | 0.125 | – |",
    ]
    html = results.results_table({"results": {"a<b": {"x": 1.0}}}, format="html")
    assert "<td>a&lt;b</td>" in html and html.startswith("<table>")
    with pytest.raises(InvalidInputError):
        results.results_table({"a": {"x": 1.0}}, format="latex")
    # counts print as integers: a count's name, or whole values above 1; a whole score stays a score
    counted = results.results_table({"a": {"iou": 1.0, "seeds": 1.0, "pixels": 1024.0}, "b": {"iou": 0.5}})
    assert counted.splitlines()[2:] == ["| a | 1.000 | 1 | 1024 |", "| b | 0.500 | – | – |"]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        path = results.write_results(tmp_path / "r.json", "c", "smoke", {"m": {"iou": 0.5}})
    finally:
        os.umask(umask)
    assert path is not None and path.stat().st_mode & 0o777 == 0o644  # 0666 minus the umask, as open() gives


def test_find_recorded_searches_up_to_the_repository_root(tmp_path: Path) -> None:
    (tmp_path / "_toc.yml").write_text("root: index\n")
    nested = tmp_path / "notebooks"
    nested.mkdir()
    assert results.recorded_dir(nested) is None  # no results/ folder yet
    assert results.find_recorded("01_x", start=nested) is None
    results.write_results(tmp_path / "results" / "01_x_full.json", "01_x", "full", {"m": {"miou": 0.5}})
    assert results.recorded_dir(nested) == tmp_path / "results"
    rec = results.find_recorded("01_x", start=nested)
    assert rec is not None and rec["results"] == {"m": {"miou": 0.5}}
    assert results.find_recorded("01_x", setting="smoke", start=nested) is None


def test_recorded_runs_in_the_repository_are_valid() -> None:
    folder = results.recorded_dir(Path(__file__).parent)
    files = sorted(folder.glob("*.json")) if folder is not None else []
    for path in files:
        rec = results.read_results(path)
        assert path.name == f"{rec['chapter']}_{rec['setting']}.json", path.name


def test_describe_recorded_says_whether_the_checkpoint_is_this_builds() -> None:
    here = "cd" * 32  # the sha256 of this build's checkpoint
    doc = {"chapter": "04_x", "setting": "full", "device": "cpu", "results": {"m": {"a": 1.0}}}

    def describe(extra: dict, model: str = "teaching") -> str:
        return results.describe_recorded({**doc, "extra": extra}, model, here)

    old = describe({"model": "teaching", "seed": 0, "runtime_s": 5400})
    assert old.startswith("recorded run: device cpu, model teaching, seed 0, 90 min;")
    assert "does not record its checkpoint" in old
    assert "the same checkpoint as this build" in describe({"model": "teaching", "checkpoint_sha256": here})
    other = describe({"model": "teaching", "checkpoint_sha256": "ab" * 32})
    assert "not the one this build runs" in other and "abababababab" in other
    assert "not the one" in describe({"model": "teaching", "checkpoint_sha256": here}, model="vit_h")
