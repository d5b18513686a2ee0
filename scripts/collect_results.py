"""Collect the metrics JSON files that the chapters write (one per chapter run).

Two uses:

* Command line: ``python scripts/collect_results.py [DIR]`` prints one Markdown table per chapter
  from ``DIR/*.json`` (default: ``$SAMLIB_RESULTS_DIR``, else ``_build/metrics``).
* Sphinx extension, listed under ``sphinx.local_extensions`` in ``_config.yml``: Sphinx reads (and
  myst-nb executes) documents in alphabetical order, which would run ``book/results.md`` *before*
  the ``notebooks/`` chapters whose metrics it shows. The extension moves the results page to the
  end of the read queue, so it sees the numbers written during the same build.

The file format is defined by ``samlib.results`` (``write_results`` / ``read_results``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

RESULTS_DOCNAME = "book/results"
ROOT = Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """``$SAMLIB_RESULTS_DIR`` if set, else ``<repo>/_build/metrics``."""
    env = os.environ.get("SAMLIB_RESULTS_DIR")
    return Path(env) if env else ROOT / "_build" / "metrics"


def _read_results_last(app: Any, env: Any, docnames: list[str]) -> None:
    if RESULTS_DOCNAME in docnames:
        docnames.remove(RESULTS_DOCNAME)
        docnames.append(RESULTS_DOCNAME)


def setup(app: Any) -> dict[str, Any]:
    app.connect("env-before-read-docs", _read_results_last)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))  # samlib without an install
    from samlib.errors import SamlibError
    from samlib.results import read_results, results_table

    folder = Path(argv[0]) if argv else results_dir()
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"no metrics in {folder}")
        return 0
    for path in files:
        try:
            rec = read_results(path)
        except SamlibError as err:
            print(f"\nskipped {path.name}: {err}")
            continue
        print(f"\n## {rec['chapter']} ({rec['setting']}, {rec['device']})\n")
        print(results_table(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
