"""dynzoo's modules import one way, bottom to top: no import, at module level or inside a function, points up.

The layers, bottom first (README, "Layout"; docs/index.md):

0. ``dynzoo.config``, ``dynzoo.logs``, ``dynzoo._compat``: configuration files, logging, private Keras APIs;
1. ``dynzoo.layers`` and ``dynzoo.data``;
2. ``dynzoo.weights``;
3. ``dynzoo.registry``;
4. ``dynzoo.models`` and ``dynzoo.applications``;
5. ``dynzoo.profile``;
6. ``dynzoo.train`` (``dynzoo.train.families`` owns each family's training);
7. ``dynzoo.export``;
8. the command-line modules, and the package itself (``import dynzoo``, the public API).

A module may import its own layer and the layers below. ``from dynzoo import __version__`` is allowed
anywhere: the version is the first line of ``dynzoo/__init__.py``, set before it imports anything.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = (
    ("dynzoo.config", 0),
    ("dynzoo.logs", 0),
    ("dynzoo._compat", 0),
    ("dynzoo.layers", 1),
    ("dynzoo.data", 1),
    ("dynzoo.weights", 2),
    ("dynzoo.registry", 3),
    ("dynzoo.models", 4),
    ("dynzoo.applications", 4),
    ("dynzoo.profile", 5),
    ("dynzoo.train", 6),
    ("dynzoo.export", 7),
)
TOP = 8
# the commands: each may import anything below it
COMMANDS = {
    "dynzoo.cli",
    "dynzoo.quickstart",
    "dynzoo.serve_demo",
    "dynzoo.profile_cli",
    "dynzoo.weights.cli",
    "dynzoo.train.cli",
    "dynzoo.train.__main__",
    "dynzoo.train.evaluate",  # `dynzoo eval`
    "dynzoo.export.cli",
}


def layer_of(module: str) -> int:
    """The layer of a dynzoo module; a ValueError for a module no layer holds (give it one above)."""
    if module in COMMANDS or module == "dynzoo":
        return TOP
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise ValueError(f"{module} belongs to no layer: add it to LAYERS or COMMANDS in {Path(__file__).name}.")


def module_name(path: Path) -> str:
    """``dynzoo/models/cdb.py`` → ``dynzoo.models.cdb``; ``export/x.py`` → ``dynzoo.export.x`` (setup.py's remap)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "export":
        parts = ["dynzoo", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    files = [*(REPO / "dynzoo").rglob("*.py"), *(REPO / "export").rglob("*.py")]
    return {module_name(p): p for p in files if "web_demo_site" not in p.parts}


def imported_modules(node: ast.AST, known: set[str]) -> list[str]:
    """The dynzoo modules an import statement names (``from a.b import c`` names ``a.b.c`` when that is a
    module, else ``a.b``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "dynzoo"]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "dynzoo":
        if node.module == "dynzoo" and all(a.name == "__version__" for a in node.names):
            return []
        submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
        return submodules or [node.module]
    return []


def upward_imports(module: str, source: str, known: set[str]) -> list[str]:
    """``"line N: imports X (layer b) from layer a"`` for every import in ``source`` that points up."""
    if module == "dynzoo":
        return []
    own = layer_of(module)
    found = []
    for node in ast.walk(ast.parse(source)):
        for target in imported_modules(node, known):
            if layer_of(target) > own:
                found.append(f"line {node.lineno}: imports {target} (layer {layer_of(target)}) from layer {own}")
    return found


def test_no_import_points_up_the_layers():
    modules = package_modules()
    assert {"dynzoo.registry", "dynzoo.export.tflite", "dynzoo.train.families.cdb"} <= set(modules)
    problems = {
        module: found
        for module, path in sorted(modules.items())
        if (found := upward_imports(module, path.read_text(encoding="utf-8"), set(modules)))
    }
    assert not problems, "\n".join(f"{m}: {'; '.join(found)}" for m, found in problems.items())


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("dynzoo.registry", "def f():\n    import dynzoo.models\n", "line 2: imports dynzoo.models (layer 4)"),
        ("dynzoo.layers.domain", "from dynzoo.registry import create_model\n", "imports dynzoo.registry (layer 3)"),
        ("dynzoo.models.cdb", "from dynzoo.train import hooks\n", "imports dynzoo.train.hooks (layer 6)"),
        ("dynzoo.export.qat", "from dynzoo.export.cli import x\n", "imports dynzoo.export.cli (layer 8)"),
        ("dynzoo.weights.manifest", "from dynzoo import registry\n", "imports dynzoo.registry (layer 3)"),
    ],
)
def test_an_upward_import_is_found(module, source, expected):
    """The imports that closed the old cycle, each put back in a module: the check names it."""
    known = set(package_modules())
    found = upward_imports(module, source, known)
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_are_not_flagged():
    known = set(package_modules())
    source = "from dynzoo import __version__\nfrom dynzoo.layers.base import count_madds\nimport numpy\n"
    assert upward_imports("dynzoo.export.bundle", source, known) == []
    assert upward_imports("dynzoo.cli", "import dynzoo.export.cli\nimport dynzoo\n", known) == []


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module → the dynzoo modules it imports (at module level or inside functions)."""
    known = set(sources)
    graph = {}
    for module, source in sources.items():
        targets = set()
        for node in ast.walk(ast.parse(source)):
            for target in imported_modules(node, known):
                while target not in known and "." in target:  # ``from dynzoo.x import name``: the module dynzoo.x
                    target = target.rsplit(".", 1)[0]
                if target in known and target not in (module, "dynzoo"):
                    targets.add(target)
        graph[module] = targets
    return graph


def test_no_import_cycle():
    """Not even through imports deferred into functions (they used to close a cycle of two dozen modules)."""
    sources = {module: path.read_text(encoding="utf-8") for module, path in package_modules().items()}
    graphlib.TopologicalSorter(import_graph(sources)).prepare()  # raises CycleError naming the cycle
    sources["dynzoo.train.hooks"] += "\ndef f():\n    from dynzoo.train.families import cdb\n"
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(import_graph(sources)).prepare()


def test_every_module_has_a_layer():
    for module in package_modules():
        layer_of(module)  # raises for a module of no layer
    with pytest.raises(ValueError, match="belongs to no layer"):
        layer_of("dynzoo.somewhere_new")
