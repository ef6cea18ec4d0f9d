"""The package's imports point one way, with no cycles (docs/ARCHITECTURE.md).

Parsed from the source, not imported, so an import hidden in a function
counts as much as one at the top: either can close a cycle at run time.
Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sockftp

PACKAGE = Path(sockftp.__file__).parent

#: What each part of sockftp may import, besides itself. The parts are the
#: top-level packages; ``sockftp`` is the package's own ``__init__``.
ALLOWED = {
    "protocol": set(),
    "disk": set(),
    "accounts": {"protocol"},
    "storage": {"protocol", "disk"},
    "client": {"protocol", "disk"},
    "server": {"sockftp", "protocol", "storage", "accounts", "disk"},
    "ftp": {"sockftp", "protocol", "server", "storage", "accounts"},
    "http": {"sockftp", "protocol", "server", "storage", "accounts"},
    "cli": {"sockftp", "protocol", "client", "server", "ftp", "http", "storage", "accounts", "disk"},
    "sockftp": {"protocol", "client"},
    "__main__": {"cli"},
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def known_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, package): path for path in package.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import and ImportFrom node that can run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    elif not (isinstance(node, ast.If) and _type_checking_only(node)):
        yield from _imports(node)


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the sockftp modules it imports.

    ``from .pkg import name`` imports ``pkg.name`` when that is a module,
    else ``pkg`` itself. The parent packages Python imports on the way are
    not counted: a package's ``__init__`` may re-export its own modules.
    """
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if is_package(path) else name.split(".")[:-1]
        found = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
                found.update(t for t in targets if t.split(".")[0] == "sockftp")
                continue
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "sockftp":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        found.discard(name)
        graph[name] = found
    return graph


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sockftp"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph():
    return edges(known_modules())


def test_every_module_lives_in_a_package_by_role():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    assert {part(m) for m in known_modules()} <= set(ALLOWED)


def test_imports_point_one_way(graph):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if part(target) != part(module) and part(target) not in ALLOWED[part(module)]
    )
    assert wrong == []


def test_no_import_cycles(graph):
    assert find_cycle(graph) is None


def test_the_checker_sees_a_cycle_and_a_wrong_way_import():
    # A test that cannot fail is a defect: show that both checks can.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert part("sockftp.protocol.wire") == "protocol"
    assert "server" not in ALLOWED["protocol"]


def test_the_parser_follows_relative_and_local_imports(tmp_path):
    source = tmp_path / "sockftp"
    (source / "server").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "server" / "__init__.py").write_text("")
    (source / "server" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from ..client import c\n"
        "def f():\n    from ..protocol.wire import Wire\n"
    )
    (source / "server" / "b.py").write_text("")
    found = edges(known_modules(source))
    assert found["sockftp.server.a"] == {"sockftp.server.b", "sockftp.protocol.wire"}
