"""protocol/ is sans-I/O, like h11: bytes in, values out, no sockets or files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import protocol

PACKAGE = Path(protocol.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

IO_MODULES = frozenset(
    {
        "socket",
        "asyncio",
        "aiohttp",
        "sqlite3",
        "os",
        "subprocess",
        "pathlib",
        "io",
        "urllib",
        "http",
        "select",
        "requests",
    }
)

#: protocol/schema.py writes the checked-in schema file from its ``main()``
#: (``make schema``): a build tool living next to the types it describes, not
#: something the agent or collector calls. It alone may use pathlib.
ALLOWED = {"schema.py": {"pathlib"}}


def imported_top_levels(source: str) -> set[str]:
    """The top-level names of every module a source file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_the_package_has_modules_to_check() -> None:
    names = {m.name for m in MODULES}
    assert {"__init__.py", "codec.py", "events.py", "fields.py", "schema.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: str(m.relative_to(PACKAGE)))
def test_module_imports_no_io_library(module: Path) -> None:
    imports = imported_top_levels(module.read_text(encoding="utf-8"))
    allowed = ALLOWED.get(str(module.relative_to(PACKAGE)), set())
    assert not (imports & IO_MODULES) - allowed, f"{module.name} imports I/O: {imports}"


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path as p",
        "from socket import socket",
        "from urllib.request import urlopen",
        "def f():\n    import asyncio",
        "try:\n    import aiohttp\nexcept ImportError:\n    pass",
        "__import__('sqlite3')",
    ],
)
def test_the_scanner_finds_io_imports(source: str) -> None:
    assert imported_top_levels(source) & IO_MODULES


def test_the_scanner_ignores_relative_imports() -> None:
    assert imported_top_levels("from .io import x\nfrom . import http") == set()
