"""The architecture rule: a module imports only from its own layer or the layers below it.

data <- features <- imaging <- graph <- model <- query <- explain/evaluate <- viz/app <- cli.
Checked on the source (every import statement, also those inside functions).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bayesrad"
LAYERS = {
    "errors": 0,
    "progress": 0,
    "data": 1,
    "features": 2,
    "imaging": 3,
    "graph": 4,
    "model": 5,
    "query": 6,
    "explain": 7,
    "evaluate": 7,
    "viz": 8,
    "app": 8,
    "pipeline": 9,
    "cli": 10,
    "__main__": 11,  # python -m bayesrad: the command line, one layer above cli
}


def _layer(module_parts: list[str]) -> int | None:
    return LAYERS.get(module_parts[0]) if module_parts else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names if node.module == "bayesrad"]
    return [(line, name) for line, name in found if name.split(".")[0] == "bayesrad"]


def test_every_module_imports_downward_only():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own_parts = path.relative_to(PACKAGE).with_suffix("").parts
        if own_parts == ("__init__",):
            continue  # the package root re-exports the public API of every layer
        own = _layer(list(own_parts))
        assert own is not None, f"{path} is in no layer; add its folder to LAYERS"
        for line, name in _imports(path):
            target = _layer(name.split(".")[1:])
            if target is not None and target > own:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} (layer {target} > {own})")
    assert not violations, "upward imports:\n" + "\n".join(violations)
