"""What the book's index and results pages compute: the chapter registry, the claims, compact tables.

``book/claims.yml`` lists every chapter of the book with the one claim of its paper that the results
page checks (see the comments in that file). This module reads it and turns metrics files (written by
the chapters, ``samlib.results``) into Markdown for the pages:

* :func:`claims_table`: one row per chapter, "holds / does not hold / not measured" by the rule
  :data:`RULE`, for this build and for the latest recorded full run under ``results/``;
* :func:`compact_table`: a chapter's metrics, one sub-table per group of rows that share their metric
  names (so columns are not mostly empty), the key metric first, counts as integers, a std beside its
  metric and only where more than one seed ran;
* :func:`chart_values`: the numbers of a chapter's small grouped bar chart;
* :func:`bench_section` (:func:`load_bench`, :func:`bench_claims_table`, :func:`bench_provenance_table`):
  the claims per seed and the provenance of every run of a benchmark recorded by ``samlib.bench``
  (``results/bench/smoke/``).

It has no torch dependency and no plotting; ``book/results.md`` draws the charts.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from samlib.results import is_count

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


def _baselines(claim: Mapping[str, Any]) -> list[str]:
    """A claim's baseline keys as a list (the registry allows one key or a list)."""
    base = claim["baseline"]
    return list(base) if isinstance(base, list) else [base]


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
    baselines = _baselines(claim)
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
        as_int = {c: is_count(c, present[c]) for c in cols}
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


# --- the recorded benchmark (samlib.bench output, e.g. results/bench/smoke/) -------------------------

BENCH_MISSING = (
    "No recorded benchmark is in this copy of the repository (`{path}` is absent). To make one, run "
    "`make bench` (it executes `benchmarks/smoke.toml` with `python -m samlib.bench`, resumably) and "
    "commit what it writes under `results/bench/smoke/` (the executed notebooks stay out, `.gitignore`)."
)


def _run_ids(bench_dir: Path) -> list[str]:
    """The benchmark's runs: the ``run`` column of its ``table.csv`` (the runner's last grid, in its
    order), else every sub-folder holding a ``provenance.json``."""
    table = bench_dir / "table.csv"
    if table.is_file():
        with open(table, newline="") as f:
            return list(dict.fromkeys(row["run"] for row in csv.DictReader(f) if row.get("run")))
    return sorted(p.parent.name for p in bench_dir.glob("*/provenance.json"))


def load_bench(bench_dir: str | Path) -> list[dict[str, Any]] | None:
    """The runs of a benchmark folder written by ``samlib.bench``, or None when the folder is absent.

    Expected layout: ``<bench_dir>/table.csv`` and per run ``<bench_dir>/<run id>/provenance.json``
    (run_id, notebook, model, parameters, commit, checkpoint_sha256, device, wall_time_s, peak_rss_mb,
    status, error when failed) and ``<bench_dir>/<run id>/metrics.json`` (``samlib.results`` format,
    present when the run succeeded). Only the runs listed in ``table.csv`` count, so a folder left from
    an earlier grid does not.

    Returns:
      (list[dict] | None): per run its provenance plus "chapter" (the notebook's stem), "seed" (the
        ``seed`` parameter, None without one) and "record" (the metrics document, None when absent or
        unreadable). A run listed without its provenance.json gets status "no provenance.json".
    """
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        return None
    runs = []
    for run_id in _run_ids(bench_dir):
        folder = bench_dir / run_id
        try:
            prov = json.loads((folder / "provenance.json").read_text())
        except (OSError, ValueError):
            prov = {"run_id": run_id, "notebook": run_id.split("--")[0], "status": "no provenance.json"}
        record = None
        if prov.get("status") == "ok":
            try:
                record = json.loads((folder / "metrics.json").read_text())
            except (OSError, ValueError):
                record = None
        params = prov.get("parameters") or {}
        chapter = Path(str(prov.get("notebook", run_id))).stem
        runs.append({**prov, "chapter": chapter, "seed": params.get("seed"), "record": record})
    return runs


def _run_column(run: Mapping[str, Any], several_models: bool) -> str:
    seed = "one run" if run.get("seed") is None else f"seed {run['seed']}"
    return f"`{run.get('model', '?')}` {seed}" if several_models else seed


def _columns(runs: Sequence[Mapping[str, Any]]) -> tuple[list[str], bool]:
    """The per-run columns (model if several, then seed, in numeric order) and whether models differ."""
    several = len({r.get("model") for r in runs}) > 1

    def order(run: Mapping[str, Any]) -> tuple[str, int, float, str]:
        seed = run.get("seed")
        number = isinstance(seed, (int, float)) and not isinstance(seed, bool)
        return str(run.get("model")), 0 if number else 1, float(seed) if number else 0.0, str(seed)

    return list(dict.fromkeys(_run_column(r, several) for r in sorted(runs, key=order))), several


def bench_claims_table(chapters: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]) -> str:
    """The claims over the runs of a benchmark: one row per chapter of the registry, one column per seed.

    Arguments:
      chapters (Sequence[Mapping]): :func:`load_chapters`.
      runs (Sequence[Mapping]): :func:`load_bench`.

    Returns:
      (str): Markdown with the columns chapter, claim (metric, method and baselines), one per seed
        ("ours vs best baseline (verdict)", "failed", "not measured", or "–" where that seed did not
        run) and "holds in" ("k of n seeds" by :func:`evaluate_claim`, n counting failed runs too).
    """
    cols, several = _columns(runs)
    rows = [
        "| chapter | claim (metric: method vs best baseline) | " + " | ".join(cols) + " | holds in |",
        "|---|---|" + "---|" * len(cols) + "---|",
    ]
    for entry in chapters:
        claim = entry["claim"]
        baselines = _baselines(claim)
        what = (
            f"{claim['text']} (`{claim['metric']}`: `{claim['ours']}` vs "
            + ("best of " if len(baselines) > 1 else "")
            + ", ".join(f"`{b}`" for b in baselines)
            + ")"
        )
        cells = dict.fromkeys(cols, "–")
        mine = [r for r in runs if r.get("chapter") == entry["chapter"]]
        holds = failed = unmeasured = 0
        for run in mine:
            col = _run_column(run, several)
            if run.get("status") != "ok":
                failed += 1
                cells[col] = f"**{run.get('status', 'failed')}**"
                continue
            out = evaluate_claim(claim, run.get("record"))
            if out["verdict"] == NOT_MEASURED:
                unmeasured += 1
                cells[col] = NOT_MEASURED
                continue
            holds += out["verdict"] == "holds"
            cells[col] = f"{out['ours']:.3f} vs {out['baseline']:.3f} ({out['verdict']})"
        if mine:
            notes = [f"{n} {kind}" for n, kind in ((failed, "failed"), (unmeasured, NOT_MEASURED)) if n]
            unit = "seeds" if all(r.get("seed") is not None for r in mine) else "runs"
            tally = f"**{holds} of {len(mine)}** {unit}" + (f" ({', '.join(notes)})" if notes else "")
        else:
            tally = "not in this benchmark"
        name = entry.get("short", entry["chapter"])
        rows.append(f"| {name} | {what} | " + " | ".join(cells[c] for c in cols) + f" | {tally} |")
    return "\n".join(rows)


def _short(value: Any, n: int) -> str:
    text = str(value) if value not in (None, "") else "?"
    head, plus, rest = text.partition("+")
    return head[:n] + plus + rest if len(head) > n else text


def _number(run: Mapping[str, Any], key: str) -> str:
    value = run.get(key)
    return f"{value:.0f}" if isinstance(value, (int, float)) else "–"


def bench_provenance_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One row per run: chapter, seed, samlib commit, checkpoint sha256 (both short), device, wall time,
    peak RSS and status; failed runs are listed under the table with the last line of their error."""
    several = len({r.get("model") for r in runs}) > 1
    head = ["chapter", *(["model"] if several else []), "seed", "samlib commit", "checkpoint sha256"]
    head += ["device", "wall time s", "peak RSS MB", "status"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * (len(head) - 3) + "---:|---:|---|"]
    problems = []
    for run in runs:
        status = str(run.get("status", "?"))
        cells = [f"`{run.get('chapter')}`", *([f"`{run.get('model')}`"] if several else [])]
        cells += ["–" if run.get("seed") is None else str(run["seed"])]
        cells += [f"`{_short(run.get('commit'), 7)}`", f"`{_short(run.get('checkpoint_sha256'), 12)}`"]
        cells += [str(run.get("device", "?")), _number(run, "wall_time_s"), _number(run, "peak_rss_mb")]
        cells.append(status if status == "ok" else f"**{status}**")
        rows.append("| " + " | ".join(cells) + " |")
        if status != "ok":
            lines = [ln.strip() for ln in str(run.get("error") or "").splitlines() if ln.strip()]
            last = lines[-1].replace("`", "'") if lines else "no error recorded"
            seed = "" if run.get("seed") is None else f" seed {run['seed']}"
            problems.append(f"- `{run.get('chapter')}`{seed} ({status}): `{last}`")
    table = "\n".join(rows)
    if problems:
        table += "\n\nRuns that did not finish (their folder's `provenance.json` has the error):\n\n"
        table += "\n".join(problems)
    return table


def bench_section(chapters: Sequence[Mapping[str, Any]], bench_dir: str | Path) -> str:
    """The results page's section on a recorded benchmark: a summary line, :func:`bench_claims_table`
    and :func:`bench_provenance_table`; one line saying how to make one when ``bench_dir`` is absent."""
    bench_dir = Path(bench_dir)
    runs = load_bench(bench_dir)
    if runs is None:
        rel = bench_dir.relative_to(ROOT) if bench_dir.is_relative_to(ROOT) else bench_dir
        return BENCH_MISSING.format(path=rel)
    if not runs:
        return f"The benchmark folder `{bench_dir.name}` holds no runs: run `make bench` again."
    ok = sum(r.get("status") == "ok" for r in runs)
    commits = ", ".join(f"`{_short(c, 7)}`" for c in dict.fromkeys(r.get("commit") for r in runs))
    models = ", ".join(f"`{m}`" for m in dict.fromkeys(r.get("model", "?") for r in runs))
    summary = (
        f"Benchmark `{bench_dir.name}`: {len(runs)} runs, {ok} finished, {len(runs) - ok} failed; "
        f"model {models}; samlib commit {commits}."
    )
    return "\n\n".join([summary, bench_claims_table(chapters, runs), bench_provenance_table(runs)])
