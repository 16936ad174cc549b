"""
The ledger's queries are written once for PostgreSQL and SQLite: `store.py` and
`reports.py` neither branch on the database nor import a dialect module or the
driver; what differs between the two is written in `db.py`.

import-linter cannot forbid `sqlalchemy.dialects` (it takes only the top-level
name of an external package), so this test reads the sources instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import worker.ledger

LEDGER = Path(worker.ledger.__file__).parent
QUERY_MODULES = ("store.py", "reports.py", "status.py", "outbox.py", "aio.py", "counts.py")
DIALECT_IMPORTS = ("sqlalchemy.dialects", "psycopg")


def dialect_lines(source: str) -> list[int]:
    """The lines that say `dialect`, in code, comments or docstrings alike."""
    return [n for n, line in enumerate(source.splitlines(), 1) if "dialect" in line.lower()]


def dialect_imports(source: str) -> list[str]:
    """The modules `source` imports (and names it imports from them) that are dialect-bound."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return sorted(m for m in imported if m.startswith(DIALECT_IMPORTS))


@pytest.mark.parametrize("name", QUERY_MODULES)
def test_a_query_module_never_speaks_of_a_dialect(name: str) -> None:
    """No `get_bind().dialect.name` branch: the difference belongs in db.py."""
    lines = dialect_lines((LEDGER / name).read_text(encoding="utf-8"))
    assert lines == [], f"{name} says `dialect` on lines {lines}; write the difference in db.py"


@pytest.mark.parametrize("name", QUERY_MODULES)
def test_a_query_module_imports_no_dialect_module_nor_the_driver(name: str) -> None:
    imports = dialect_imports((LEDGER / name).read_text(encoding="utf-8"))
    assert imports == [], f"{name} imports {imports}; only db.py may"


def test_the_checks_see_db_py_which_holds_the_differences() -> None:
    """The same checks flag db.py, so they would flag a branch moved back into the store."""
    source = (LEDGER / "db.py").read_text(encoding="utf-8")
    assert dialect_lines(source)
    assert "sqlalchemy.dialects" in dialect_imports(source)
    assert "psycopg" in dialect_imports(source)
    assert dialect_imports("from sqlalchemy import dialects") == ["sqlalchemy.dialects"]
