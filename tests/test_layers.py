"""The layers of src/forever_slurm hold: a folder never imports one above it.

cli.py > setup/ > observe/ > core/ and tunnel/ (side by side, never each other) > systems/ > common/.
A helper two layers need moves down, not sideways (STYLE.md 16). Imports inside functions count too.
"""

import ast
import os

import pytest

TOP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "forever_slurm")
RANK = {"common": 0, "systems": 1, "core": 2, "tunnel": 2, "observe": 3, "setup": 4}
SIDE_BY_SIDE = {frozenset(("core", "tunnel"))}


def _modules():
    for folder, _, files in os.walk(TOP):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, TOP).split(os.sep), path


def _imported_folders(path, parts):
    """(line, folder) of every forever_slurm folder the module at `parts` imports."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            elif node.module and node.module.split(".")[0] == "forever_slurm":
                names = [node.module.split(".")[1:]]
            else:
                continue
            for name in names:
                if name and name[0] in RANK:
                    yield node.lineno, name[0]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.split(".")
                if name[0] == "forever_slurm" and len(name) > 1 and name[1] in RANK:
                    yield node.lineno, name[1]


def violations():
    found = []
    for parts, path in _modules():
        if len(parts) < 2 or parts[0] not in RANK:
            continue        # cli.py, __main__.py, __init__.py: the top may import anything
        own = parts[0]
        for line, other in _imported_folders(path, parts):
            if other == own:
                continue
            if RANK[other] > RANK[own] or frozenset((own, other)) in SIDE_BY_SIDE:
                found.append("%s:%d imports %s/" % ("/".join(parts), line, other))
    return found


def test_no_module_imports_a_folder_above_its_own():
    assert violations() == []


@pytest.mark.parametrize("source, parts, expected", [
    ("from ..setup import units\n", ["core", "x.py"], [(1, "setup")]),
    ("from ..core.loop import policy_from\n", ["observe", "x.py"], [(1, "core")]),
    ("from .. import core\n", ["systems", "x.py"], [(1, "core")]),
    ("def f():\n    from forever_slurm.observe import status\n", ["common", "x.py"], [(2, "observe")]),
    ("from . import slurm\n", ["systems", "x.py"], [(1, "systems")]),
])
def test_the_import_reader_sees_every_form(tmp_path, source, parts, expected):
    path = tmp_path / "x.py"
    path.write_text(source)
    assert list(_imported_folders(str(path), parts)) == expected
