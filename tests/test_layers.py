"""samlib's import layers (README, "Layout"): a module imports only from its own layer or below, method
modules never import each other, layer-1 modules do not import torch at module level, and there is no
import cycle. A new module must be given a layer here (the test says so)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SAMLIB = Path(__file__).resolve().parents[1] / "samlib"

LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "utils", "_compat"], 0),
    # 1: no torch at import time
    **dict.fromkeys(["prompts", "postprocess", "metrics", "tiling", "scenes", "data", "results", "geo"], 1),
    **dict.fromkeys(["plots", "widgets", "clustering", "augment", "referring"], 1),
    # 2: torch models and the code that runs them
    **dict.fromkeys(
        ["losses", "distributed", "training", "models", "embeddings", "predict", "adapters", "decoders"], 2
    ),
    **dict.fromkeys(["tiled"], 2),
    **dict.fromkeys(["amg", "studies", "teaching", "teaching.model", "teaching.photos", "experts"], 2),
    # 3: methods (one per paper), training / evaluation entry points, command lines
    **dict.fromkeys(
        ["methods", "teaching.train", "teaching.evaluate", "teaching.__main__", "bench", "cli"], 3
    ),
}
"""Module (dotted, without "samlib.") -> layer; ``experts.*`` are layer 2 and ``methods.*`` layer 3."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in SAMLIB.rglob("*.py"):
        parts = path.relative_to(SAMLIB).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # the root package re-exports the public API from every layer: not checked
            out[name] = path
    return out


def _layer(name: str) -> int:
    top = name.split(".")[0]
    if top in ("experts", "methods"):
        return LAYERS[top]
    if name not in LAYERS:
        pytest.fail(f"samlib.{name} has no layer: add it to LAYERS in tests/test_layers.py (see README)")
    return LAYERS[name]


def _imports(path: Path, package: str, top_level_only: bool = False) -> set[str]:
    """samlib modules imported by ``path`` (dotted, without "samlib."), anywhere in the file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(["samlib", *package.split(".")][: len(package.split(".")) + 2 - node.level])
                base = f"{base}.{node.module}" if node.module else base
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.removeprefix("samlib.") for n in names if n.startswith("samlib.")}
    return found


MODULES = _modules()


def _resolved(imports: set[str]) -> set[str]:
    """Map 'x.y.Name' to the longest prefix that is a samlib module."""
    out = set()
    for name in imports:
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            if ".".join(parts[:k]) in MODULES:
                out.add(".".join(parts[:k]))
                break
    return out


GRAPH = {
    name: _resolved(_imports(path, name if path.name == "__init__.py" else name.rpartition(".")[0])) - {name}
    for name, path in MODULES.items()
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_layers(name: str) -> None:
    higher = sorted(dep for dep in GRAPH[name] if _layer(dep) > _layer(name))
    assert not higher, f"samlib.{name} (layer {_layer(name)}) imports from a higher layer: {higher}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("methods.")))
def test_method_modules_do_not_import_each_other(name: str) -> None:
    others = sorted(dep for dep in GRAPH[name] if dep.startswith("methods.") and dep != name)
    assert not others, f"samlib.{name} imports other method modules {others}: move the shared part down"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if LAYERS.get(n) == 1))
def test_layer_one_does_not_import_torch_at_module_level(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    heavy = {"torch", "segment_anything", "torchvision", "transformers", "peft"}
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top.add(node.module.split(".")[0])
    assert not top & heavy, (
        f"samlib.{name} (layer {LAYERS[name]}) imports {sorted(top & heavy)} at import time"
    )


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            # a package's __init__ importing its own submodules is not a cycle
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(f"samlib.{m}" for m in cycle))
            if state.get(dep) is None:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if state.get(name) is None:
            visit(name, [name])
