"""The allowed arrows between packages (README "Architecture"), checked on the source with ast.

- training/ imports nothing of classifier/, config/ or Django (at any level, functions included).
- No domain package of classifier/ imports another domain's views or api (at any level).
- versions never imports runs (runs call versions; a version's split key comes from datasets).
- No import cycles between modules of classifier/. Only module-level imports count: an import
  inside a function runs when it is called, after every module has loaded, so it cannot take part
  in a circular import at load time. Such late imports are kept for heavy libraries and for the
  one late-bound edge, runs.services.run_enqueue -> runs.tasks (the task imports the services at
  module level). Imports under ``if TYPE_CHECKING:`` never run and do not count either.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("datasets", "runs", "serving", "storage", "versions", "web")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, module_level_only: bool) -> list[str]:
    """Dotted names a file imports; ``from a.b import c`` gives ``a.b.c`` (a module or a name in a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                if not module_level_only:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not module_level_only:
                    visit(node.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.ExceptHandler)])

    visit(tree.body)
    return found


def _target_module(name: str, known: set[str]) -> str | None:
    """The known module a dotted import name refers to (``a.b.c`` -> ``a.b.c`` or ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def test_training_imports_nothing_of_the_django_app():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("training")
        for name in imports(path, module_level_only=False)
        if name.split(".")[0] in {"classifier", "config", "django", "rest_framework", "celery"}
    ]
    assert offenders == []


def test_no_domain_imports_another_domains_views_or_api():
    offenders = []
    for domain in DOMAINS:
        for path in python_files(f"classifier/{domain}"):
            for name in imports(path, module_level_only=False):
                parts = name.split(".")
                if len(parts) >= 3 and parts[0] == "classifier" and parts[1] in DOMAINS and parts[1] != domain:
                    if parts[2] in {"views", "api"}:
                        offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_versions_never_imports_runs():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("classifier/versions")
        for name in imports(path, module_level_only=False)
        if name.startswith("classifier.runs")
    ]
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_no_import_cycles_between_modules_of_the_app():
    files = {module_name(p): p for p in python_files("classifier")}
    known = set(files)
    graph = {
        name: {
            target
            for imported in imports(path, module_level_only=True)
            if (target := _target_module(imported, known)) is not None and target != name
        }
        for name, path in files.items()
    }
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_check_finds_a_circle(graph, expected):
    assert _cycles(graph) == expected


def _readme_tree() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Architecture")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.parametrize("package", ["training", *(f"classifier/{d}" for d in DOMAINS)])
def test_readme_architecture_names_every_module(package):
    """README's tree is the map a newcomer reads: every module of a room must be on it."""
    tree = _readme_tree()
    names = sorted(
        p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"
    ) + sorted(p.name + "/" for p in (ROOT / package).iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    missing = [n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}", tree)]
    assert not missing, f"README's Architecture section does not name {package}/: {', '.join(missing)}"


@pytest.mark.parametrize("package", ["training", "classifier"])
def test_no_module_grows_past_a_readable_size(package):
    """One room per topic: a module past ~400 lines holds two topics (split it by topic)."""
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p in python_files(package)
           if (n := len(p.read_text().splitlines())) > 420]
    assert not big, "modules over ~400 lines: " + ", ".join(big)
