"""The package's house rules, read from the source (CONTRIBUTING.md, "The package"):

- the lesson modules import neither the artifact cache (`course_utils.artifacts`) nor a command
  line (`course_utils.cli`): only the command lines use the cache;
- no import circle among the modules of `course_utils`;
- no re-export: a name is imported from the module that defines it;
- a name that is private (`_name`) stays inside its module;
- an import inside a function is there for a heavy dependency or to break a cycle, and says so
  in a comment (`# heavy: ...` or `# cycle: ...`) on the line above or on its own line;
- modules stay readable: none over 500 lines, `sampling.py` within 350 and `generate` within 50.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "course_utils"
MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(PACKAGE.rglob("*.py"))}
READERS = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "tools").glob("*.py"),
                  *(ROOT / "nbs").glob("[0-9]*.py"), *(ROOT / "e2e").glob("*.py"),
                  *(ROOT / "book" / "images").glob("*.py")])
TESTS = sorted((ROOT / "tests").glob("*.py"))


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an `from ... import` names, from inside `module`."""
    if not node.level:
        return node.module or ""
    package = module.split(".")[: len(module.split(".")) - node.level + (module in PACKAGE_NAMES)]
    return ".".join(package + ([node.module] if node.module else []))


PACKAGE_NAMES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def imports(module: str, path: Path):
    """(imported module, names, node) for every import in the file, nested ones included; an
    `from X import name` where X.name is itself a module counts as importing that module."""
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom):
            target = absolute(module, node)
            names = [a.name for a in node.names]
            yield target, names, node
            for name in names:
                if f"{target}.{name}" in MODULES:
                    yield f"{target}.{name}", [], node


def module_name(path: Path) -> str:
    return next((name for name, p in MODULES.items() if p == path), path.stem)


def graph() -> dict[str, set[str]]:
    edges = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in imports(name, path):
            if target in MODULES and target != name and target != "course_utils":
                edges[name].add(target)
    return edges


def test_lesson_modules_import_neither_the_cache_nor_a_command_line():
    offenders = []
    for name, targets in graph().items():
        if name.startswith("course_utils.cli"):
            continue
        offenders += [f"{name} imports {t}" for t in targets
                      if t == "course_utils.artifacts" or t.startswith("course_utils.cli")]
    assert not offenders, offenders


def test_no_import_circle():
    edges, state, cycles = graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def defined(path: Path) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments)."""
    names = set()
    for node in tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_every_name_is_imported_from_the_module_that_defines_it():
    wrong = []
    for path in READERS + TESTS:
        for target, names, node in imports(module_name(path), path):
            if target not in MODULES or target in PACKAGE_NAMES:
                continue
            there = defined(MODULES[target])
            for name in names:
                if name not in there and f"{target}.{name}" not in MODULES:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name} from {target}, "
                                 f"which does not define it")
    assert not wrong, wrong


def test_no_all_lists_a_name_the_module_does_not_define():
    for name, path in MODULES.items():
        for node in tree(path).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                listed = {elt.value for elt in node.value.elts}
                assert listed <= defined(path), f"{name}.__all__ re-exports {sorted(listed - defined(path))}"


def test_private_names_stay_inside_their_module():
    leaks = []
    for path in READERS:
        module = module_name(path)
        aliases = {}
        for target, names, node in imports(module, path):
            if target.startswith("course_utils") and target != module:
                leaks += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n} from {target}"
                          for n in names if n.startswith("_") and not n.startswith("__")]
                if isinstance(node, ast.Import):
                    aliases.update({a.asname or a.name: a.name for a in node.names})
                else:
                    aliases.update({a.asname or a.name: f"{target}.{a.name}" for a in node.names
                                    if f"{target}.{a.name}" in MODULES})
        for node in ast.walk(tree(path)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and aliases.get(node.value.id, "").startswith("course_utils")
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                leaks.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not leaks, leaks


def test_an_import_inside_a_function_says_why():
    unexplained = []
    for path in MODULES.values():
        lines = path.read_text(encoding="utf-8").splitlines()
        module = tree(path)
        main_guard = {id(n) for stmt in module.body if isinstance(stmt, ast.If)
                      and "__main__" in ast.unparse(stmt.test) for n in ast.walk(stmt)}
        top = {id(n) for n in module.body}
        for node in ast.walk(module):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
                continue
            if id(node) in main_guard and ast.unparse(node) == "import runpy":
                continue        # `python -m course_utils.X` hands over to course_utils/cli/X.py
            above = node.lineno - 2                    # the comment heads a group of imports
            while above > 0 and lines[above].lstrip().startswith(("from ", "import ")):
                above -= 1
            said = lines[node.lineno - 1] + " " + lines[above]
            if "# heavy:" not in said and "# cycle:" not in said:
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, unexplained


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    limit = 350 if name == "course_utils.sampling" else 500
    assert lines <= limit, f"{name} has {lines} lines (at most {limit}): split it by audience"


def test_generate_reads_on_one_screen():
    node = next(n for n in tree(MODULES["course_utils.sampling"]).body
                if isinstance(n, ast.FunctionDef) and n.name == "generate")
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    assert node.end_lineno - first + 1 <= 50, f"generate has {node.end_lineno - first + 1} lines"
