"""The package's structure: layers that only point down, and no import cycle (docs/architecture.md).

Every import in src/unmasking counts, module level or inside a function (a lazy import is still a
dependency). Who may import whom (MAY_IMPORT):

    foundations   <-  science        (models, data, masks, training, multitrain, imp, spectral, analyses)
    foundations   <-  metrics        (torch-free reading of results)
    foundations, metrics  <-  presentation  (figures, claims: never the science, so never torch)
    all of them   <-  top            (commands, workflow)

each layer also importing itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "unmasking"

# Top-level modules and packages of unmasking, by layer. A new one must be placed here.
LAYER_OF_TOP = {
    "foundations": "foundations",
    "models": "science",
    "data": "science",
    "masks": "science",
    "training": "science",
    "multitrain": "science",
    "imp": "science",
    "analyses": "science",
    "spectral": "science",
    "metrics": "metrics",
    "figures": "presentation",
    "claims": "presentation",
    "commands": "top",
    "workflow": "top",
    "__main__": "top",
}
MAY_IMPORT = {
    "foundations": {"foundations"},
    "science": {"foundations", "science"},
    "metrics": {"foundations", "metrics"},
    "presentation": {"foundations", "metrics", "presentation"},
    "top": {"foundations", "science", "metrics", "presentation", "top"},
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a name inside one) refers to."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                assert keep >= 1, f"{path}:{node.lineno}: relative import goes above the {PACKAGE} package"
                base = base[:keep]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` depends on pkg.mod when it is a module, else on pkg itself
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name, known)
                if target and target != module:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "foundations"  # the package's __init__: the version, nothing else
    top = parts[1]
    assert top in LAYER_OF_TOP, f"{module}: give the new module {top!r} a layer (LAYER_OF_TOP, docs/architecture.md)"
    return LAYER_OF_TOP[top]


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def test_layers_only_point_down():
    bad = [
        f"{m} ({layer(m)}) imports {t} ({layer(t)})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer(t) not in MAY_IMPORT[layer(m)]
    ]
    assert not bad, "imports across layers the wrong way:\n" + "\n".join(bad)


def test_package_init_imports_nothing():
    assert graph()[PACKAGE] == set()


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``g`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(g) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_resolution_of_relative_imports(tmp_path):
    known = {
        "unmasking": Path("__init__.py"),
        "unmasking.analyses": Path("analyses/__init__.py"),
        "unmasking.analyses.hessian": Path("h.py"),
        "unmasking.masks": Path("m.py"),
    }
    f = tmp_path / "x.py"
    f.write_text(
        "from .. import masks as M\nfrom .hessian import MaskedHessian\ndef f():\n    from ..foundations import io\n"
    )
    assert imports("unmasking.analyses.x", f, known) == {"unmasking.masks", "unmasking.analyses.hessian", "unmasking"}


def test_a_relative_import_above_the_package_is_an_error(tmp_path):
    f = tmp_path / "masks.py"
    f.write_text("def f():\n    from ..commands import main\n")
    try:
        imports("unmasking.masks", f, {"unmasking": Path("__init__.py")})
    except AssertionError as e:
        assert "relative import goes above the unmasking package" in str(e)
    else:
        raise AssertionError("an import above the package went unnoticed")
