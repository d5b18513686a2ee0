"""What the book's index and results pages compute: the chapter registry, the claims, compact tables.

``book/claims.yml`` lists every chapter of the book with the one claim of its paper that the results
page checks (see the comments in that file). This module reads it and turns metrics files (written by
the chapters, ``samlib.results``) into Markdown for the pages:

* :func:`claims_table`: one row per chapter, "holds / does not hold / not measured" by the rule
  :data:`RULE`, for this build and for the latest recorded full run under ``results/``;
* :func:`compact_table`: a chapter's metrics, one sub-table per group of rows that share their metric
  names (so columns are not mostly empty), the key metric first, counts as integers, a std beside its
  metric and only where more than one seed ran;
* :func:`chart_values`: the numbers of a chapter's small grouped bar chart.

It has no torch dependency and no plotting; ``book/results.md`` draws the charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_FILE = ROOT / "book" / "claims.yml"
NOT_MEASURED = "not measured"
RULE = (
    "A claim **holds** when our method's metric exceeds the best of its baselines' by more than the "
    "claim's margin (0 unless stated) in the same metrics file; it **does not hold** otherwise; it is "
    "**not measured** when the chapter's metrics file, or one of the keys the claim names, is absent. "
    "One smoke run is one seed on small data: a verdict from it says which way the comparison points "
    "here, not that the difference is significant."
)
COUNT_NAMES = ("seeds", "objects", "n", "count", "masks")


def load_chapters(path: str | Path = CLAIMS_FILE) -> list[dict[str, Any]]:
    """The chapter entries of ``book/claims.yml``, in reading order.

    Arguments:
      path (str | Path): the registry file.

    Returns:
      (list[dict]): one dict per chapter with at least "chapter", "title", "paper" and "claim".
    """
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    chapters = doc.get("chapters") if isinstance(doc, dict) else None
    if not isinstance(chapters, list) or not chapters:
        raise ValueError(f"{path}: expected a non-empty list under 'chapters'.")
    for entry in chapters:
        missing = {"chapter", "title", "paper", "claim"} - set(entry)
        if missing:
            raise ValueError(f"{path}: chapter entry {entry.get('chapter')!r} lacks {sorted(missing)}.")
        claim = entry["claim"]
        for key in ("text", "paper_number", "metric", "ours", "baseline"):
            if key not in claim:
                raise ValueError(f"{path}: the claim of {entry['chapter']} lacks {key!r}.")
    return chapters


def evaluate_claim(claim: Mapping[str, Any], record: Mapping[str, Any] | None) -> dict[str, Any]:
    """Apply :data:`RULE` to one claim and one metrics record.

    Arguments:
      claim (Mapping): a "claim" entry of ``book/claims.yml``.
      record (Mapping | None): a metrics document (``samlib.results.read_results``), or None.

    Returns:
      (dict): "verdict" ("holds", "does not hold" or "not measured"), and when measured "ours",
        "baseline" (the best baseline value), "baseline_key" and "delta".
    """
    if record is None:
        return {"verdict": NOT_MEASURED, "why": "no metrics file"}
    results = record["results"]
    metric = claim["metric"]
    baselines = claim["baseline"] if isinstance(claim["baseline"], list) else [claim["baseline"]]
    keys = [claim["ours"], *baselines]
    absent = [k for k in keys if metric not in results.get(k, {})]
    if absent:
        return {"verdict": NOT_MEASURED, "why": f"missing {', '.join(absent)} ({metric})"}
    ours = results[claim["ours"]][metric]
    best_key = max(baselines, key=lambda k: results[k][metric])
    base = results[best_key][metric]
    delta = ours - base
    margin = float(claim.get("margin", 0.0))
    return {
        "verdict": "holds" if delta > margin else "does not hold",
        "ours": ours,
        "baseline": base,
        "baseline_key": best_key,
        "delta": delta,
    }


def _cell(outcome: Mapping[str, Any], metric: str) -> str:
    if outcome["verdict"] == NOT_MEASURED:
        return NOT_MEASURED
    return (
        f"**{outcome['verdict']}**: {outcome['ours']:.3f} vs {outcome['baseline']:.3f} "
        f"({outcome['delta']:+.3f} {metric})"
    )


def claims_table(
    chapters: Sequence[Mapping[str, Any]],
    build: Mapping[str, Mapping[str, Any]],
    recorded: Mapping[str, Mapping[str, Any]],
) -> str:
    """The claims table: one row per chapter of the registry, in its order.

    Arguments:
      chapters (Sequence[Mapping]): :func:`load_chapters`.
      build (Mapping[str, Mapping]): chapter -> metrics document measured in this build.
      recorded (Mapping[str, Mapping]): chapter -> latest recorded full-setting document.

    Returns:
      (str): a Markdown table with the columns chapter, claim (with the paper's number), this build,
        recorded full run; a measured cell reads "verdict: ours vs best baseline (difference metric)".
    """
    rows = [
        "| chapter | the paper's claim (the paper's number) | this build | recorded full run |",
        "|---|---|---|---|",
    ]
    for entry in chapters:
        claim = entry["claim"]
        now = _cell(evaluate_claim(claim, build.get(entry["chapter"])), claim["metric"])
        full = recorded.get(entry["chapter"])
        then = _cell(evaluate_claim(claim, full), claim["metric"]) if full else "no recorded run"
        name = entry.get("short", entry["chapter"])
        rows.append(f"| {name} | {claim['text']} (paper: {claim['paper_number']}) | {now} | {then} |")
    return "\n".join(rows)


def _is_count(name: str, values: Sequence[float]) -> bool:
    integral = all(float(v).is_integer() for v in values)
    return integral and (any(abs(v) > 1 for v in values) or name.lower() in COUNT_NAMES)


def _format(value: float, as_int: bool) -> str:
    if math.isnan(value):
        return "–"
    return f"{int(round(value))}" if as_int else f"{value:.3f}"


def _group_rows(results: Mapping[str, Mapping[str, float]]) -> list[tuple[list[str], list[str]]]:
    """Rows grouped so that each group's columns are (nearly) all filled: (metric names, methods)."""
    groups: list[tuple[list[str], list[str]]] = []
    for method, metrics in results.items():
        names = [m for m in metrics if not m.endswith("_std")]
        for cols, methods in groups:
            if len(set(cols) ^ set(names)) <= 1:  # at most one column differs: same table
                cols += [m for m in names if m not in cols]
                methods.append(method)
                break
        else:
            groups.append((names, [method]))
    return groups


def compact_table(results: Mapping[str, Mapping[str, float]], first: Sequence[str] = ()) -> str:
    """A chapter's metrics as Markdown, one sub-table per group of rows with the same metric names.

    Arguments:
      results (Mapping): ``{method: {metric: value}}``; a ``<metric>_std`` entry is the spread over
        seeds of ``<metric>``.
      first (Sequence[str]): metric names to put first (the chapter's key metric), when present.

    Returns:
      (str): Markdown. A std is printed beside its metric ("0.913 ± 0.009") and omitted where it is
        zero (a single seed); columns whose values are all whole numbers above 1 (or named like a
        count) print as integers; a value a row does not have prints as "–".
    """
    parts = []
    for names, methods in _group_rows(results):
        cols = [m for m in first if m in names] + [m for m in names if m not in first]
        present = {c: [results[m][c] for m in methods if c in results[m]] for c in cols}
        as_int = {c: _is_count(c, present[c]) for c in cols}
        lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for m in methods:
            cells = []
            for c in cols:
                value = results[m].get(c, float("nan"))
                text = _format(value, as_int[c])
                std = results[m].get(f"{c}_std", 0.0)
                cells.append(f"{text} ± {std:.3f}" if std >= 0.0005 and not math.isnan(value) else text)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def chart_values(
    results: Mapping[str, Mapping[str, float]], chart: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """The bars of a chapter's chart: ``{split: {method: value}}``, only the keys the results have.

    Arguments:
      results (Mapping): ``{method: {metric: value}}`` of one metrics document.
      chart (Mapping): the chapter's "chart" entry (methods, splits, key and metric templates).

    Returns:
      (dict): splits in the registry's order, each with the methods found for it (possibly none).
    """
    out: dict[str, dict[str, float]] = {}
    for split in chart["splits"]:
        metric = chart["metric"].format(split=split)
        row = {}
        for method in chart["methods"]:
            key = chart["key"].format(method=method, split=split)
            if metric in results.get(key, {}):
                row[method] = results[key][metric]
        if row:
            out[split] = row
    return out
