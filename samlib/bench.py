"""Run chapters x parameter grids x models through papermill, resumably: ``python -m samlib.bench``.

A benchmark is a small TOML file (``benchmarks/smoke.toml``, ``full.toml``, ``official-weights.toml``)::

    name = "smoke"
    [[run]]
    notebook = "notebooks/01_geosam.ipynb"
    models = ["teaching"]
    [run.parameters]
    smoke = true
    seed = [0, 1, 2]        # a list is a grid axis: one run per value

Every run gets a folder ``<out>/<benchmark>/<run id>/`` with the executed notebook, the metrics JSON
the notebook wrote (``out_json``) and ``provenance.json``: samlib commit, checkpoint sha256, device,
wall time, peak RSS, status, and the run's input key. A run whose key -- sha256 of the notebook,
parameters, checkpoint sha256, samlib commit -- is unchanged and which succeeded before is skipped,
so an interrupted benchmark resumes where it stopped. A failing run is recorded (status "failed",
the error's last lines) and the others go on. ``table.md`` / ``table.csv`` combine all runs of the
benchmark file (only those: a folder left from an earlier grid is not in them).

What to commit (``.gitignore`` keeps the rest out): each run's ``metrics.json`` and ``provenance.json``
and the benchmark's ``table.md`` / ``table.csv``; the executed notebook and ``papermill.log`` stay local.
``book/results.md`` builds its section "Across seeds" from ``results/bench/smoke/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from tqdm.auto import tqdm

from samlib.errors import InvalidInputError
from samlib.models import SAM_CHECKPOINTS, checkpoint_path, sha256_file
from samlib.results import write_text_atomic
from samlib.teaching.model import TEACHING_CHECKPOINT

__all__ = ["BenchRun", "load_benchmark", "run_benchmark", "main"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchRun:
    """One notebook execution of a benchmark.

    Attributes:
      notebook (Path): the chapter notebook.
      model (str): passed as the ``model`` parameter.
      parameters (dict[str, Any]): the other papermill parameters (one point of the grid).
      run_id (str): folder name: notebook stem, model and a digest of the parameters.
    """

    notebook: Path
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.parameters, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.notebook.stem}--{Path(self.model).stem}--{digest}"


def load_benchmark(path: str | Path) -> tuple[str, list[BenchRun]]:
    """The benchmark's name and its runs (grid axes expanded, models crossed), from a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"benchmark file {path} does not exist.")
    spec = tomllib.loads(path.read_text())
    entries = spec.get("run", [])
    if not entries:
        raise InvalidInputError(f"{path} defines no [[run]] table.")
    runs = []
    for entry in entries:
        if "notebook" not in entry:
            raise InvalidInputError(f"a [[run]] in {path} has no notebook.")
        notebook = Path(entry["notebook"])
        notebook = notebook if notebook.is_absolute() else (path.parent / notebook).resolve()
        if not notebook.is_file():
            notebook = (ROOT / entry["notebook"]).resolve()
        params = dict(entry.get("parameters", {}))
        axes = {k: v for k, v in params.items() if isinstance(v, list)}
        fixed = {k: v for k, v in params.items() if not isinstance(v, list)}
        for model in entry.get("models", ["teaching"]):
            for values in itertools.product(*axes.values()):
                runs.append(BenchRun(notebook, str(model), {**fixed, **dict(zip(axes, values, strict=True))}))
    return str(spec.get("name", path.stem)), runs


def checkpoint_sha256(model: str) -> str:
    """sha256 of the checkpoint file ``model`` resolves to ("missing" if it is not on disk).

    ``model`` is what :func:`samlib.models.load_sam` takes: "teaching", an official name ("vit_b",
    "vit_l", "vit_h": the file in the download cache) or the path of a checkpoint file.
    """
    if model == "teaching":
        path = TEACHING_CHECKPOINT
    elif model in SAM_CHECKPOINTS:
        path = checkpoint_path(model)
    else:
        path = Path(model).expanduser()
    return sha256_file(path) if path.is_file() else "missing"


def samlib_commit() -> str:
    """The checkout's git commit (with "+dirty" when samlib/ has uncommitted changes), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "samlib"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_key(run: BenchRun, commit: str, checkpoint: str) -> str:
    """Digest of what decides a run's result: notebook bytes, parameters, model, checkpoint, commit."""
    parts = [
        sha256_file(run.notebook),
        json.dumps(run.parameters, sort_keys=True),
        run.model,
        checkpoint,
        commit,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    kernels = str(Path(sys.prefix) / "share" / "jupyter")
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in [kernels, env.get("JUPYTER_PATH", "")] if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.pop("SAMLIB_RESULTS_DIR", None)  # a run writes to its own out_json only
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _execute(run: BenchRun, folder: Path, timeout_s: float) -> dict[str, Any]:
    """Run one notebook in a papermill subprocess; its wall time, peak RSS and outcome."""
    params = {**run.parameters, "model": run.model, "out_json": str(folder / "metrics.json")}
    cmd = [
        sys.executable, "-m", "papermill", str(run.notebook), str(folder / run.notebook.name),
        "-k", "python3", "--cwd", str(run.notebook.parent), "-y", json.dumps(params),
        "--no-progress-bar", "--execution-timeout", str(int(timeout_s)),
    ]  # fmt: skip
    start = time.perf_counter()
    with open(folder / "papermill.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_environment())
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of papermill and the kernel it reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"wall_time_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    if proc.returncode == 0 and (folder / "metrics.json").is_file():
        out["status"] = "ok"
    else:
        tail = (folder / "papermill.log").read_text(errors="replace").strip().splitlines()[-8:]
        out.update(status="failed", error="\n".join(tail) or f"exit code {proc.returncode}")
    return out


def run_benchmark(
    path: str | Path, out_dir: str | Path | None = None, timeout_s: float = 1800, progress: bool = True,
    rerun: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Execute every run of the benchmark file ``path`` that is not already done; write the table.

    Arguments:
      path (str | Path): the TOML file.
      out_dir (str | Path | None): results root (default ``results/bench`` of the checkout).
      timeout_s (float): per-cell execution timeout.
      rerun (bool): execute even runs whose inputs are unchanged.

    Returns:
      (list[dict[str, Any]]): the provenance of every run (skipped ones read back), in file order.
    """
    import torch

    name, runs = load_benchmark(path)
    root = Path(out_dir) if out_dir is not None else ROOT / "results" / "bench"
    bench_dir = root / name
    commit = samlib_commit()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    for run in tqdm(runs, desc=f"benchmark {name}", disable=not progress):
        records.append(_run_or_skip(run, bench_dir / run.run_id, commit, device, timeout_s, rerun))
        write_table(bench_dir, records)  # after every run: an interrupted benchmark keeps a table of what ran
    return records


def _run_or_skip(
    run: BenchRun, folder: Path, commit: str, device: str, timeout_s: float, rerun: bool
) -> dict[str, Any]:
    """Execute one run into ``folder`` and return its provenance, or read back the provenance of a run
    already done with the same key (``skipped``: True)."""
    checkpoint = checkpoint_sha256(run.model)
    key = run_key(run, commit, checkpoint)
    prov_path = folder / "provenance.json"
    if not rerun and prov_path.is_file():
        old = json.loads(prov_path.read_text())
        if old.get("key") == key and old.get("status") == "ok":
            return {**old, "skipped": True}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").unlink(missing_ok=True)
    prov = {
        "run_id": run.run_id, "notebook": run.notebook.name, "model": run.model,
        "parameters": run.parameters, "commit": commit, "checkpoint_sha256": checkpoint,
        "device": device, "key": key, **_execute(run, folder, timeout_s),
    }  # fmt: skip
    write_text_atomic(prov_path, json.dumps(prov, indent=2))
    return {**prov, "skipped": False}


def _run_label(rec: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """A run's column name among the runs of its notebook: the model and parameters that differ."""
    keys = sorted({k for o in others for k in o["parameters"]})
    varying = [k for k in keys if len({json.dumps(o["parameters"].get(k)) for o in others}) > 1]
    parts = [rec["model"]] if len({o["model"] for o in others}) > 1 else []
    parts += [f"{k}={json.dumps(rec['parameters'].get(k))}" for k in varying]
    return " ".join(parts) or "value"


def write_table(bench_dir: Path, records: list[dict[str, Any]]) -> Path:
    """``table.csv`` and ``table.md`` in ``bench_dir``, combining the runs of ``records`` (in their order).

    ``table.csv`` is long: one row per run, method and metric (a run without metrics -- failed -- has one
    row with them empty), with the run's notebook, model, parameters, status, wall time and peak RSS.
    ``table.md`` has one section per notebook: its runs (status, wall time, peak RSS) and its metrics,
    one row per ``method.metric`` and one column per run, named by what differs between the runs (the
    seed). Both are line-oriented so that a re-run's diff shows which numbers moved.
    """
    rows: list[dict[str, str]] = []
    by_notebook: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
    for rec in records:
        base = {
            "run": rec["run_id"],
            "notebook": Path(rec["notebook"]).stem,
            "model": rec["model"],
            "parameters": json.dumps(rec["parameters"], sort_keys=True),
            "status": rec["status"],
            "wall_time_s": f"{rec['wall_time_s']:.1f}",
            "peak_rss_mb": f"{rec['peak_rss_mb']:.0f}",
        }
        values: dict[str, str] = {}
        metrics = bench_dir / rec["run_id"] / "metrics.json"
        if rec["status"] == "ok" and metrics.is_file():
            for method, by_metric in json.loads(metrics.read_text()).get("results", {}).items():
                for metric, value in by_metric.items():
                    text = f"{value:.4g}" if isinstance(value, float) else str(value)
                    values[f"{method}.{metric}"] = text
                    rows.append({**base, "method": method, "metric": metric, "value": text})
        if not values:
            rows.append({**base, "method": "", "metric": "", "value": ""})
        by_notebook.setdefault(base["notebook"], []).append((rec, values))
    bench_dir.mkdir(parents=True, exist_ok=True)
    columns = ["run", "notebook", "model", "parameters", "status", "wall_time_s", "peak_rss_mb"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [*columns, "method", "metric", "value"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(bench_dir / "table.csv", buffer.getvalue())
    lines = [f"# Benchmark {bench_dir.name}"]
    for notebook, runs in by_notebook.items():
        recs = [rec for rec, _ in runs]
        labels = [_run_label(rec, recs) for rec in recs]
        lines += [
            "",
            f"## {notebook}",
            "",
            "| run | model | parameters | status | wall time s | peak RSS MB |",
        ]
        lines.append("|---|---|---|---|---:|---:|")
        for (rec, _), label in zip(runs, labels, strict=True):
            params = json.dumps(rec["parameters"], sort_keys=True)
            lines.append(
                f"| {label} (`{rec['run_id']}`) | {rec['model']} | `{params}` | {rec['status']} "
                f"| {rec['wall_time_s']:.1f} | {rec['peak_rss_mb']:.0f} |"
            )
        names = list(dict.fromkeys(k for _, values in runs for k in values))
        if names:
            lines += ["", "| method.metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            lines += [f"| {n} | " + " | ".join(v.get(n, "–") for _, v in runs) + " |" for n in names]
    write_text_atomic(bench_dir / "table.md", "\n".join(lines) + "\n")
    return bench_dir / "table.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlib.bench", description=__doc__.split("\n")[0])
    parser.add_argument("benchmark", nargs="?", default=str(ROOT / "benchmarks" / "smoke.toml"))
    parser.add_argument("--out", default=None, help="results root (default results/bench)")
    parser.add_argument("--rerun", action="store_true", help="execute runs whose inputs are unchanged too")
    parser.add_argument("--timeout", type=float, default=1800, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    records = run_benchmark(args.benchmark, args.out, args.timeout, rerun=args.rerun)
    for rec in records:
        state = "skipped (unchanged)" if rec["skipped"] else rec["status"]
        print(f"{rec['run_id']:<60} {state:<20} {rec['wall_time_s']:7.1f} s")
        if rec["status"] != "ok":
            print("    " + rec.get("error", "").replace("\n", "\n    "))
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
