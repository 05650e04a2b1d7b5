"""The layout keeps data flowing one way: a package imports only from packages below it."""

import ast
from pathlib import Path

import cellclr

SRC = Path(cellclr.__file__).parent
# lowest first; a module may import from its own layer or any layer below it
LAYERS = [
    {"progress"},  # imports nothing of cellclr
    {
        "errors",
        "columns",
        "config",
        "shipped",
        "outputs",
        "stages",
        "fingerprint",
        "metadata",
        "workers",
    },
    {"embeddings"},
    {"store"},
    {"pixels"},
    {"tables"},
    {"datasets"},
    {"cropping"},
    {"learning"},
    {"baselines"},
    {"profiling"},
    {"report"},
    {"pipeline", "compare", "demo", "cli", "__main__", "__init__"},
]


def layer(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("cellclr.")}


def test_no_package_imports_a_higher_one():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        for other in imported(ast.parse(path.read_text())):
            if layer(other) > layer(own):
                wrong.append(f"{path.relative_to(SRC)} imports cellclr.{other}")
    assert not wrong, wrong


def test_modules_stay_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
