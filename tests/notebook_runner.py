"""Run a chapter notebook with papermill and return the metrics it recorded.

Shared by ``tests/test_notebooks.py`` (schema checks for every chapter) and the per-chapter tests
(chapter-specific assertions)::

    from notebook_runner import run_notebook

    def test_geosam_beats_zero_shot():
        rec = run_notebook("01_geosam")          # smoke=True by default
        res = rec["results"]
        assert res["geosam"]["miou"] > res["zero_shot"]["miou"]

A run is cached for the whole pytest session, keyed by notebook name and parameters, so several
tests can assert on one execution. ``pytest.skip`` is raised when the notebook does not exist.
The executed notebooks live in a temporary folder that is removed when the session ends, unless
``SAMLIB_KEEP_EXECUTED=1`` (``executed_notebook(name, **params)`` gives the path).

Kernel: papermill starts the kernel named ``python3``; the venv's kernelspec directory is put first
on ``JUPYTER_PATH`` so that name resolves to the venv's own ipykernel (jupyter_client launches
``sys.executable`` for it), whatever kernels the user has registered elsewhere.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 1200

_RUNS: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Path, dict[str, Any]]] = {}
_WORKDIR: Path | None = None


def notebook_names() -> list[str]:
    """Stems of ``notebooks/*.ipynb`` in reading order (checkpoint copies excluded)."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb") if not p.name.startswith("."))


def default_data_root() -> str | None:
    """``samlib.data.data_root()`` when samlib provides it and the folder exists, else None."""
    try:
        from samlib.data import data_root  # type: ignore[attr-defined]

        root = data_root()
    except Exception:  # samlib.data missing or raising: fall back to the documented convention
        env = os.environ.get("SAMLIB_DATA")
        root = Path(env) if env else ROOT.parent / "shared" / "data"
    return str(root) if root is not None and Path(root).is_dir() else None


def _prepare_environment() -> None:
    # the venv's kernelspecs first, so kernel "python3" is this interpreter's ipykernel
    kernels = str(Path(sys.prefix) / "share" / "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    if kernels not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([kernels, *paths])
    # samlib importable in the kernel even without `pip install -e .`
    pypath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in pypath:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *pypath])
    # a relative SAMLIB_DATA would be re-resolved in the kernel's working dir (notebooks/): pin it once
    if os.environ.get("SAMLIB_DATA"):
        os.environ["SAMLIB_DATA"] = str(Path(os.environ["SAMLIB_DATA"]).expanduser().absolute())
    # a smoke run must write to out_json only, never into the book's results folder
    os.environ.pop("SAMLIB_RESULTS_DIR", None)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def _workdir() -> Path:
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="samlib-notebooks-"))
        if os.environ.get("SAMLIB_KEEP_EXECUTED") != "1":
            atexit.register(shutil.rmtree, _WORKDIR, ignore_errors=True)
    return _WORKDIR


def _key(name: str, params: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted((k, repr(v)) for k, v in params.items()))


def _execute(name: str, **params: Any) -> tuple[Path, dict[str, Any]]:
    name = name.removesuffix(".ipynb")
    params.setdefault("smoke", True)
    if "data_root" not in params:
        params["data_root"] = default_data_root()
    key = _key(name, params)
    if key in _RUNS:
        return _RUNS[key]

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        pytest.skip(f"notebook {source.relative_to(ROOT)} does not exist (yet)")
    import papermill as pm

    from samlib import read_results

    _prepare_environment()
    outdir = _workdir() / f"{name}-{len(_RUNS)}"
    outdir.mkdir(parents=True)
    params.setdefault("out_json", str(outdir / "metrics.json"))
    executed = outdir / f"{name}.ipynb"
    pm.execute_notebook(
        str(source),
        str(executed),
        parameters=params,
        kernel_name=KERNEL_NAME,
        cwd=str(NOTEBOOK_DIR),  # as in the book build: the notebook's folder is the working dir
        execution_timeout=CELL_TIMEOUT_S,
        progress_bar=False,
        log_output=False,
    )
    out_json = Path(params["out_json"])
    assert out_json.exists(), f"{name} ran but wrote no metrics to out_json={out_json}"
    record = read_results(out_json)
    _RUNS[key] = (executed, record)
    return _RUNS[key]


def run_notebook(name: str, **params: Any) -> dict[str, Any]:
    """Execute ``notebooks/<name>.ipynb`` (``smoke=True`` unless given) and return its metrics.

    ``data_root`` defaults to samlib's data root (``$SAMLIB_DATA`` or ``../shared/data``) when it
    exists, else None; ``out_json`` defaults to a file in a session temp folder. The returned dict
    is what ``samlib.read_results`` reads back: ``chapter``, ``setting``, ``device``, ``results``.
    """
    return _execute(name, **params)[1]


def executed_notebook(name: str, **params: Any) -> Path:
    """Path of the executed copy (with outputs) of the run ``run_notebook(name, **params)`` made."""
    return _execute(name, **params)[0]
