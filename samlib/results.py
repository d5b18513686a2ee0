"""The metrics-file contract shared by every chapter, defined once.

A results file is JSON::

    {"chapter": "03-prompts", "setting": "roads-eth/test", "device": "cuda",
     "results": {"<method>": {"<metric>": <finite float>, ...}, ...},
     "extra": {...}}          # optional, any JSON

Notebooks call :func:`write_results` unconditionally; with ``path=None`` it does nothing.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samlib.errors import DataNotFoundError, InvalidInputError

__all__ = [
    "COUNT_NAMES",
    "describe_recorded",
    "find_recorded",
    "check_chapter_name",
    "is_count",
    "read_results",
    "recorded_dir",
    "results_table",
    "validate_results",
    "write_text_atomic",
    "write_results",
]

_KEYS = {"chapter", "setting", "device", "results"}


def _finite_float(value: Any, where: str) -> float:
    if hasattr(value, "item") and tuple(getattr(value, "shape", (0,))) == ():
        value = value.item()  # numpy / torch 0-d arrays and scalars
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{where} must be a number, got {type(value).__name__} ({value!r}).")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidInputError(f"{where} is {out}: results must be finite numbers.")
    return out


def validate_results(results: Any) -> dict[str, dict[str, float]]:
    """Check ``{method: {metric: value}}`` and return a copy with plain float values.

    Raises:
      InvalidInputError: naming the method/metric at fault (empty names, non-numbers, NaN, inf).
    """
    if not isinstance(results, Mapping) or not results:
        raise InvalidInputError("results must be a non-empty dict {method: {metric: value}}.")
    clean: dict[str, dict[str, float]] = {}
    for method, metrics in results.items():
        if not isinstance(method, str) or not method.strip():
            raise InvalidInputError(f"Method names must be non-empty strings, got {method!r}.")
        if not isinstance(metrics, Mapping) or not metrics:
            raise InvalidInputError(f"results[{method!r}] must be a non-empty dict {{metric: value}}.")
        clean[method] = {}
        for metric, value in metrics.items():
            if not isinstance(metric, str) or not metric.strip():
                raise InvalidInputError(
                    f"Metric names of {method!r} must be non-empty strings, got {metric!r}."
                )
            clean[method][metric] = _finite_float(value, f"results[{method!r}][{metric!r}]")
    return clean


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


RESULTS_DIR_ENV = "SAMLIB_RESULTS_DIR"
"""Environment variable naming the folder where chapters record metrics when ``out_json`` is None."""


def write_results(
    path: str | Path | None,
    chapter: str,
    setting: str,
    results: Mapping[str, Mapping[str, Any]],
    device: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path | None:
    """Validate and atomically write a results file (parent directories are created).

    With ``path`` None the file goes to ``$SAMLIB_RESULTS_DIR/<chapter>.json`` when that variable is
    set (the book build sets it, and its results page reads the folder back), else nowhere.

    Returns:
      (Path | None): the path written, or None when nothing was written.
    """
    for name, value in (("chapter", chapter), ("setting", setting)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}.")
    check_chapter_name(chapter)
    if path is None:
        results_dir = os.environ.get(RESULTS_DIR_ENV)
        if not results_dir:
            return None
        path = Path(results_dir) / f"{chapter}.json"
    if device is not None and not isinstance(device, str):
        device = str(device)  # e.g. a torch.device
    doc: dict[str, Any] = {
        "chapter": chapter,
        "setting": setting,
        "device": device,
        "results": validate_results(results),
    }
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise InvalidInputError(f"extra must be a dict, got {type(extra).__name__}.")
        doc["extra"] = dict(extra)
    try:
        text = json.dumps(doc, indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidInputError(f"extra is not JSON serialisable (finite numbers only): {e}") from e
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"Cannot create the folder of results file {out}: {e}") from e
    return write_text_atomic(out, text + "\n")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) so that a reader sees the old file or the whole new one, never a
    half-written file: a temporary file beside it, then ``os.replace``. The folder must exist."""
    out = Path(path)
    # Not tempfile.mkstemp: it creates 0600 files, and reading the umask to undo that is process-global
    # (not thread-safe). O_EXCL on a unique name is as safe, and the kernel applies the umask to 0666.
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


CHAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""What a chapter name may look like (it becomes a file name): letters, digits, ``_ . -``; no path."""


def check_chapter_name(chapter: str) -> str:
    """``chapter`` if it is a safe file stem (:data:`CHAPTER_NAME`, no ``..``), else InvalidInputError.

    The name becomes ``$SAMLIB_RESULTS_DIR/<chapter>.json``: "../x" or "a/b" would write outside it.
    """
    if not isinstance(chapter, str) or not CHAPTER_NAME.fullmatch(chapter) or ".." in chapter:
        raise InvalidInputError(
            f"chapter must be a plain name like '04_planetary_distillation' (letters, digits, '_', '.', '-'; "
            f"no '/', no '..', at most 128 characters), got {chapter!r}."
        )
    return chapter


MAX_RESULTS_BYTES = 16 << 20
"""Largest results file :func:`read_results` reads (metrics files are a few kB)."""


def read_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results file written by :func:`write_results`."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"Results file {p} does not exist.")
    if p.stat().st_size > MAX_RESULTS_BYTES:
        raise InvalidInputError(f"Results file {p} is {p.stat().st_size} bytes: not a metrics file.")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"Results file {p} is not valid JSON: {e}") from e
    except RecursionError:
        raise InvalidInputError(f"Results file {p} is nested too deeply to be a results file.") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"Results file {p} must hold a JSON object, got {type(doc).__name__}.")
    missing = _KEYS - doc.keys()
    if missing:
        raise InvalidInputError(f"Results file {p} lacks key(s) {sorted(missing)}.")
    unknown = doc.keys() - _KEYS - {"extra"}
    if unknown:
        raise InvalidInputError(f"Results file {p} has unknown key(s) {sorted(unknown)}.")
    for key in ("chapter", "setting"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise InvalidInputError(f"Results file {p}: {key!r} must be a non-empty string.")
    if doc["device"] is not None and not isinstance(doc["device"], str):
        raise InvalidInputError(f"Results file {p}: 'device' must be a string or null.")
    try:
        doc["results"] = validate_results(doc["results"])
    except InvalidInputError as e:
        raise InvalidInputError(f"Results file {p}: {e}") from e
    return doc


COUNT_NAMES: tuple[str, ...] = ("seeds", "objects", "n", "count", "masks")
"""Metric names that count things (printed as integers when all their values are whole)."""


def is_count(name: str, values: Sequence[float]) -> bool:
    """Whether a column of a metrics table holds counts: every value is whole, and the column has a
    count's name (:data:`COUNT_NAMES`) or a value above 1 (no score in these tables exceeds 1)."""
    integral = all(float(v).is_integer() for v in values)
    return integral and (any(abs(v) > 1 for v in values) or name.lower() in COUNT_NAMES)


def results_table(
    results: Mapping[str, Any],
    metrics: Sequence[str] | None = None,
    fmt: str = "{:.3f}",
    format: str = "markdown",
) -> str:
    """A table of methods (rows) by metrics (columns) as Markdown or HTML.

    Arguments:
      results: ``{method: {metric: value}}``, or a whole results document (its "results" are used).
      metrics: columns to show, in order; default: every metric, in order of first appearance.
      format: "markdown" or "html". Missing values show as "–"; counts (:func:`is_count`) as integers.
    """
    inner = results.get("results", results) if isinstance(results, Mapping) else results
    clean = validate_results(inner)
    if metrics is None:
        metrics = list(dict.fromkeys(m for per in clean.values() for m in per))
    counts = {m for m in metrics if is_count(m, [per[m] for per in clean.values() if m in per])}

    def cell(per: Mapping[str, float], m: str) -> str:
        if m not in per:
            return "–"
        return str(int(per[m])) if m in counts else fmt.format(per[m])

    rows = [[method] + [cell(per, m) for m in metrics] for method, per in clean.items()]
    header = ["method", *metrics]
    if format == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(metrics)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    if format == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    raise InvalidInputError(f"format must be 'markdown' or 'html', got {format!r}.")


RECORDED_DIR_NAME = "results"
"""Folder at the repository root holding committed runs, e.g. ``results/01_geosam_full.json``."""


def recorded_dir(start: str | Path | None = None) -> Path | None:
    """The repository's ``results/`` folder of recorded runs, searched upwards from ``start`` (default cwd).

    Full-setting runs take longer than a book build can, so their metrics files are committed there
    (``<chapter>_<setting>.json``, written by the chapter itself with ``-p out_json``) and the chapters
    and the results page show them beside the numbers measured during the build.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            found = folder / RECORDED_DIR_NAME
            return found if found.is_dir() else None
    return None


def find_recorded(
    chapter: str, setting: str = "full", start: str | Path | None = None
) -> dict[str, Any] | None:
    """The recorded run of ``chapter`` in ``setting`` (validated), or None when there is none."""
    folder = recorded_dir(start)
    if folder is None:
        return None
    path = folder / f"{chapter}_{setting}.json"
    return read_results(path) if path.is_file() else None


def describe_recorded(doc: Mapping[str, Any], model: str, checkpoint_sha256: str) -> str:
    """One line on where a recorded run comes from, for a chapter to print above its numbers.

    Arguments:
      doc: a results document (:func:`find_recorded`); its "extra" may hold "model", "seed",
        "runtime_s" and "checkpoint_sha256" (chapters record them).
      model: the model this build runs (the chapter's ``model`` parameter).
      checkpoint_sha256: the sha256 of the checkpoint ``model`` resolves to here
        (:func:`samlib.bench.checkpoint_sha256`).

    Returns:
      (str): device, model, seed and run time of the recording, and whether its checkpoint is this
      build's — files written before chapters recorded their checkpoint say so and point to the results
      folder's README, which lists it.
    """
    extra = doc.get("extra") or {}
    parts = [f"device {doc.get('device', '?')}", f"model {extra.get('model', '?')}"]
    if "seed" in extra:
        parts.append(f"seed {extra['seed']}")
    if isinstance(extra.get("runtime_s"), (int, float)):
        parts.append(f"{extra['runtime_s'] / 60:.0f} min")
    recorded_sha = extra.get("checkpoint_sha256")
    if not recorded_sha:
        checkpoint = "the file does not record its checkpoint (results/README.md lists it)"
    elif extra.get("model") == model and recorded_sha == checkpoint_sha256:
        checkpoint = "the same checkpoint as this build"
    else:
        checkpoint = (
            f"checkpoint sha256 {str(recorded_sha)[:12]}…, not the one this build runs: compare the recorded "
            "rows with each other, not with this build's"
        )
    return "recorded run: " + ", ".join(parts) + "; " + checkpoint + "."
