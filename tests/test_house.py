"""The architecture's rules, checked on the source: no import cycle among the project's modules (lazy imports
included), no dispatch on class names, the parsed flags never written to, one atomic write, thin runners, and the
memory layout kept inside the compute path."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {"tests", ".venv", "venv", ".git", "run", "build"}


def product_files():
    return sorted(p for p in REPO.rglob("*.py")
                  if not (set(p.relative_to(REPO).parts[:-1]) & SKIP) and "site-packages" not in p.parts)


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in product_files()}


def imported(path):
    """The project modules ``path`` imports anywhere in it (functions included)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                 else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            parts = name.split(".")
            for k in range(1, len(parts) + 1):      # importing a.b runs a/__init__ too (but not one's own package)
                target = ".".join(parts[:k])
                if target in MODULES and target != me and not me.startswith(target + "."):
                    out.add(target)
    return out


def test_no_import_cycle_among_the_project_modules():
    graph = {m: imported(p) for m, p in MODULES.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
    assert len(graph) > 60 and graph["main"] >= {"runners", "commands"}     # the graph is really the project's


def _sources():
    return [(p, ast.parse(p.read_text())) for p in product_files()]


def test_no_product_code_tests_a_class_name():
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "__name__" for s in sides):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found


def test_the_parsed_flags_are_never_written_to():
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "args":
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args and \
                    getattr(node.args[0], "id", None) == "args":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found


def test_one_module_defines_the_atomic_write():
    users = [p.relative_to(REPO).as_posix() for p in product_files() if "os.fsync" in p.read_text()]
    assert users == ["atomic.py"]


@pytest.mark.parametrize("path", sorted((REPO / "runners").glob("*.py")), ids=lambda p: p.name)
def test_runner_files_are_thin(path):
    assert len(path.read_text().splitlines()) <= 200


def test_runners_and_commands_leave_the_layout_to_the_compute_path():
    for folder in ("runners", "commands"):
        for path in (REPO / folder).glob("*.py"):
            assert "to_layout" not in path.read_text(), path


def test_every_package_says_what_lives_there():
    for init in REPO.glob("*/__init__.py"):
        if init.parent.name in SKIP:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, init
