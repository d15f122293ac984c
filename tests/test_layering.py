"""Who may import whom, read from the source with ``ast`` so the layers stay visible."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eventsvc"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # ``from . import segments`` imports a module, not a name
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def reaches(imported: set[str], forbidden: str) -> list[str]:
    return sorted(name for name in imported if name == forbidden or name.startswith(forbidden + "."))


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_imports_of_resolves_relative_imports():
    """The helper itself: a module known to import the store must be seen doing so."""
    assert reaches(imports_of(PACKAGE / "api" / "__init__.py"), "eventsvc.store")
    assert reaches(imports_of(PACKAGE / "store" / "files" / "__init__.py"), "eventsvc.store.files.segments")
    assert reaches(imports_of(PACKAGE / "store" / "files" / "__init__.py"), "eventsvc.store.rules")
    assert reaches(imports_of(PACKAGE / "emitter.py"), "contextvars")


@pytest.mark.parametrize(("module",), [("types.py",), ("errors.py",), ("config.py",)])
def test_leaf_modules_import_nothing_of_ours(module):
    assert reaches(imports_of(PACKAGE / module), "eventsvc") == []


@pytest.mark.parametrize(("forbidden",), [("flask",), ("werkzeug",), ("click",), ("eventsvc.api",)])
def test_store_never_imports_the_web_or_cli_layers(forbidden):
    files = python_files(PACKAGE / "store")
    assert files
    offenders = {module_name(path): reaches(imports_of(path), forbidden) for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize(("forbidden",), [("eventsvc.store.files.segments",), ("eventsvc.store.files.index",)])
def test_api_never_reaches_into_segments_or_index(forbidden):
    files = python_files(PACKAGE / "api")
    assert files
    offenders = {module_name(path): reaches(imports_of(path), forbidden) for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize(("forbidden",), [("flask",), ("eventsvc.api",)])
def test_cli_never_imports_flask_views(forbidden):
    assert reaches(imports_of(PACKAGE / "cli.py"), forbidden) == []


CLIENT_MAY_IMPORT = ("eventsvc.client", "eventsvc.errors", "eventsvc.emitter")


def test_the_client_never_imports_the_server():
    files = python_files(PACKAGE / "client")
    assert files
    ours = {module_name(path): {name for name in imports_of(path) if name == "eventsvc" or name.startswith("eventsvc.")}
            for path in files}
    offenders = {module: sorted(name for name in names
                                if not any(name == allowed or name.startswith(allowed + ".")
                                           for allowed in CLIENT_MAY_IMPORT) and name != "eventsvc")
                 for module, names in ours.items()}
    assert {module: found for module, found in offenders.items() if found} == {}
    server_stack = ("flask", "werkzeug", "gunicorn", "peewee", "marshmallow", "requests")
    assert {module_name(path): found for path in files
            if (found := [name for forbidden in server_stack for name in reaches(imports_of(path), forbidden)])} == {}


@pytest.mark.parametrize(("package",), [("api",), ("store",)])
def test_the_server_never_imports_the_client(package):
    offenders = {module_name(path): reaches(imports_of(path), "eventsvc.client")
                 for path in python_files(PACKAGE / package)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_the_client_loads_no_server_module():
    import subprocess
    import sys

    script = ("import sys, eventsvc.client, eventsvc.cli; "
              "print(sorted({m.partition('.')[0] for m in sys.modules} & "
              "{'flask', 'werkzeug', 'gunicorn', 'peewee', 'marshmallow'}))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(("forbidden",), [("eventsvc.store.files.segments",), ("eventsvc.store.files.index",), ("eventsvc.cli",)])
def test_console_reads_through_the_store_only(forbidden):
    files = python_files(PACKAGE / "ui")
    assert files
    offenders = {module_name(path): reaches(imports_of(path), forbidden) for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize(("module",), [("timeline.py",), ("present.py",), ("data.py",)])
def test_console_logic_is_free_of_flask(module):
    assert reaches(imports_of(PACKAGE / "ui" / module), "flask") == []


@pytest.mark.parametrize(("forbidden",), [("flask",), ("werkzeug",), ("click",), ("eventsvc.api",), ("eventsvc.ui",)])
def test_ops_never_import_the_web(forbidden):
    files = python_files(PACKAGE / "ops")
    assert files
    offenders = {module_name(path): reaches(imports_of(path), forbidden) for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize(("forbidden",), [("eventsvc.store.files",), ("eventsvc.store.postgres",)])
def test_copy_moves_stores_through_their_interface(forbidden):
    assert reaches(imports_of(PACKAGE / "ops" / "copy.py"), forbidden) == []


SHARED_STORE_MODULES = ("base.py", "drafts.py", "rules.py", "listings.py", "watch.py")


@pytest.mark.parametrize(("module",), [(name,) for name in SHARED_STORE_MODULES])
def test_shared_store_modules_know_no_backend(module):
    """What both backends share (the interface, envelope preparation, the append rules) depends on neither."""
    imported = imports_of(PACKAGE / "store" / module)
    assert reaches(imported, "eventsvc.store.files") + reaches(imported, "eventsvc.store.postgres") == []
    assert reaches(imported, "sqlite3") + reaches(imported, "peewee") + reaches(imported, "psycopg") == []


@pytest.mark.parametrize(("backend", "other"), [("files", "postgres"), ("postgres", "files")])
def test_backends_never_import_each_other(backend, other):
    offenders = {module_name(path): reaches(imports_of(path), f"eventsvc.store.{other}")
                 for path in python_files(PACKAGE / "store" / backend)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_store_folders_show_the_split():
    store = PACKAGE / "store"
    assert sorted(path.name for path in store.glob("*.py")) == sorted(("__init__.py", *SHARED_STORE_MODULES))
    assert (store / "files" / "__init__.py").is_file() and (store / "postgres" / "__init__.py").is_file()


@pytest.mark.parametrize(("folder",), [("api",), ("ui",)])
def test_the_web_layers_use_the_store_interface_only(folder):
    """The HTTP API and the console reach a backend only through eventsvc.store (its face and interface)."""
    offenders = {module_name(path): reaches(imports_of(path), "eventsvc.store.files")
                 + reaches(imports_of(path), "eventsvc.store.postgres") for path in python_files(PACKAGE / folder)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_offline_tools_live_in_ops():
    loose = {path.name for path in PACKAGE.glob("*.py")} & {"audit.py", "stats.py", "export.py", "copy.py"}
    assert not loose and not list(PACKAGE.glob("audit_*.py"))


@pytest.mark.parametrize(("folder",), [("api",), ("ops",)])
def test_only_the_store_knows_postgres(folder):
    offenders = {module_name(path): reaches(imports_of(path), "psycopg") + reaches(imports_of(path), "psycopg_pool")
                 for path in python_files(PACKAGE / folder)}
    assert {name: found for name, found in offenders.items() if found} == {}
