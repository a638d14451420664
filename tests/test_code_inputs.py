"""acft.code_inputs: the import closure of a script, read from the source, on a small package built here."""

from __future__ import annotations

from pathlib import Path

from acft.code_inputs import code_files


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_closure_follows_absolute_relative_and_deferred_imports(tmp_path):
    write(
        tmp_path,
        {
            "acft/__init__.py": "",
            "acft/io.py": "import json\n",
            "acft/unused.py": "",
            "acft/data/__init__.py": "",
            "acft/data/cache.py": "from ..io import dumps\n",  # two levels up, an attribute of a module
            "acft/data/reader.py": "from . import cache\nfrom .sub import deep\n",  # `from package import module`
            "acft/data/sub/__init__.py": "",
            "acft/data/sub/deep.py": "def load():\n    from ...lazy import thing\n",  # deferred, three up
            "acft/lazy.py": "import os\n",
            "script.py": "import sys\nimport _bootstrap\nfrom acft.data.reader import read\n",
        },
    )
    names = lambda files: {str(f.relative_to(tmp_path / "acft")) for f in files}  # noqa: E731
    every = names(code_files(tmp_path / "script.py", tmp_path))
    assert every == {
        "__init__.py",
        "io.py",
        "data/__init__.py",
        "data/cache.py",
        "data/reader.py",
        "data/sub/__init__.py",
        "data/sub/deep.py",
        "lazy.py",
    }
    certain = names(code_files(tmp_path / "script.py", tmp_path, deferred=False))
    assert certain == every - {"lazy.py"}


def test_a_package_init_resolves_relative_imports_from_itself(tmp_path):
    write(
        tmp_path,
        {
            "acft/__init__.py": "",
            "acft/models/__init__.py": "from .registry import build\n",
            "acft/models/registry.py": "from .hf import Model\n",
            "acft/models/hf.py": "",
            "script.py": "from acft.models import build\n",
        },
    )
    files = {str(f.relative_to(tmp_path / "acft")) for f in code_files(tmp_path / "script.py", tmp_path)}
    assert files == {"__init__.py", "models/__init__.py", "models/registry.py", "models/hf.py"}


def test_an_import_by_name_counts_as_importing_its_package_modules(tmp_path):
    """acft.probes.run reaches the registry's probe modules with import_module: every module of its package is
    its code, modules of other packages are not, and a script that only reads the registry gets none of them."""
    write(
        tmp_path,
        {
            "acft/__init__.py": "",
            "acft/other.py": "",
            "acft/probes/__init__.py": "PROBES = {'knn': 'knn'}\n",
            "acft/probes/knn.py": "from ..other import x\n",
            "acft/probes/linear.py": "",
            "acft/probes/run.py": (
                "from importlib import import_module\n"
                "def run(name):\n    return import_module(f'{__package__}.{name}')\n"
            ),
            "probe.py": "from acft.probes.run import run\n",
            "tables.py": "from acft.probes import PROBES\n",
        },
    )
    names = lambda script, **kw: {  # noqa: E731
        str(f.relative_to(tmp_path / "acft")) for f in code_files(tmp_path / script, tmp_path, **kw)
    }
    assert names("probe.py") == {
        "__init__.py",
        "other.py",
        "probes/__init__.py",
        "probes/knn.py",
        "probes/linear.py",
        "probes/run.py",
    }
    assert names("probe.py", deferred=False) == {"__init__.py", "probes/__init__.py", "probes/run.py"}
    assert names("tables.py") == {"__init__.py", "probes/__init__.py"}
