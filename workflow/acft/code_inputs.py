"""The package source files a workflow script runs: the import closure of its ``acft`` imports, read with
``ast`` (nothing is imported, so it is cheap at parse time).

Snakemake's code trigger sees only a rule's own script. These files are the rule's code inputs: an edit to any
module its job runs reruns the job, and an edit to any other module reruns nothing. Imports inside functions
count too (a lazily imported module still runs). Every package ``__init__.py`` on the way is included, since
importing ``acft.a.b`` runs ``acft/__init__.py`` and ``acft/a/__init__.py``. A module that imports by name
(``importlib.import_module``, as ``acft.probes.run`` does to reach the probe registry's modules) counts as
importing every module of its own package.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "acft"


def module_file(name: str, root: Path) -> Path | None:
    """``acft.x.y`` -> ``root/acft/x/y.py`` or ``root/acft/x/y/__init__.py``; None if it is not a module."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_nodes(tree: ast.AST, deferred: bool):
    """Import statements of a module; with ``deferred`` False, not those inside function bodies."""
    if deferred:
        yield from ast.walk(tree)
        return
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))


def _is_import_module_call(node: ast.AST) -> bool:
    """``import_module(...)`` or ``importlib.import_module(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "import_module") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )


@functools.cache
def _imported_names(path: Path, module: str | None, deferred: bool = True) -> frozenset[str]:
    """Absolute names of the ``acft`` modules (and possibly their attributes) that ``path`` imports.

    ``module`` is the file's own dotted name (None for a script), to resolve relative imports; ``deferred``
    includes imports inside functions.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names = set()
    for node in _import_nodes(tree, deferred):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, up level - 1 more
                if module is None:
                    continue
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif _is_import_module_call(node) and module is not None:
            package = module if is_package else module.rpartition(".")[0]
            names.update(f"{package}.{f.stem}" for f in path.parent.glob("*.py") if f.stem != "__init__")
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def code_files(script: str | Path, root: str | Path, deferred: bool = True) -> list[Path]:
    """Sorted source files of every ``acft`` module that ``script`` imports, directly or not.

    Args:
        script: a workflow script (or any Python file).
        root: the directory holding the ``acft`` package (``workflow/``).
        deferred: follow imports inside functions too (a rule's code inputs do: the job may call them);
            without, only the modules that importing the script certainly runs.
    """
    root = Path(root).resolve()
    seen: dict[str, Path] = {}
    pending = list(_imported_names(Path(script).resolve(), None, deferred))
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the module and every package above it
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = module_file(prefix, root)
            if path is None:  # an attribute (`from acft.x import function`), not a module
                continue
            seen[prefix] = path
            pending.extend(_imported_names(path, prefix, deferred))
    return sorted(seen.values())
