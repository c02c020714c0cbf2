"""The package's floor plan (ARCHITECTURE.md): each module imports only from the layers below its own, never a
private name of another module, and no group of modules imports each other in a circle.

Imports anywhere in a file count, inside functions too: a deferred import still ties two modules.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssmpipe"

# Bottom first. A room is a module, or a subpackage with everything in it (its modules may import each other,
# without a circle). ARCHITECTURE.md draws the same floors.
LAYERS = [
    ["", "errors", "columns", "layout", "atomic", "inputs"],  # names and files ("": the package's __init__)
    ["theory", "data", "progress"],  # the math; data sets; a shard's live progress record
    ["models"],  # the SSM layers and the packed model
    ["config"],  # what a valid config is
    ["keys", "measures", "runs", "checkpoint", "manifest"],  # run ids; measures; runs tables; checkpoints; manifests
    ["store"],  # trust and quarantine of what is read back
    ["sweep"],  # planning: points into shards
    ["train", "table"],  # training a shard; a sweep's table
    ["slurm"],  # a shard (or any job) on SLURM
    ["tune"],  # Ray Tune studies
    ["status", "report"],  # what a user reads
    ["cli"],  # the command line
    ["__main__"],  # python -m ssmpipe
]
FLOOR = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, str | None]]:
    """(module imported, the name taken from it or None) for every import of an ssmpipe module in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    out.append((f"{target}.{alias.name}", None))
                elif target in modules:
                    out.append((target, alias.name))
    return out


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        m: {t for t, _ in _imports(m, f, modules) if t != m and not m.startswith(t + ".")} for m, f in modules.items()
    }


def test_every_module_has_a_floor():
    rooms = {_room(m) for m in _modules()}
    assert rooms - set(FLOOR) == set(), "a new module: give it a floor here and in ARCHITECTURE.md"
    assert set(FLOOR) - rooms <= {"inputs"}, "a floor names a module that is gone"


def test_modules_import_only_from_floors_below():
    upward = [
        f"{m} (floor {FLOOR[_room(m)]}) imports {t} (floor {FLOOR[_room(t)]})"
        for m, targets in _graph().items()
        for t in targets
        if _room(m) != _room(t) and FLOOR[_room(t)] >= FLOOR[_room(m)]
    ]
    assert upward == []


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    private = [
        f"{m} imports {t}.{n}"
        for m, f in modules.items()
        for t, n in _imports(m, f, modules)
        if n and n.startswith("_") and not n.startswith("__") and t != m
    ]
    assert private == []


def test_no_circle_of_imports():
    graph, seen, circles = _graph(), {}, []

    def visit(m: str, path: list[str]) -> None:  # depth first; a module met again on the path closes a circle
        seen[m] = "open"
        for t in sorted(graph[m]):
            if seen.get(t) == "open":
                circles.append(" -> ".join([*path[path.index(t) :], t]))
            elif t not in seen:
                visit(t, [*path, t])
        seen[m] = "done"

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
    assert circles == []
