"""Binding the models to the configured database, and running migrations."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import peewee as pw
from playhouse.db_url import connect as _connect_url

from core import models

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# WAL lets the SMTP, worker, delivery and web processes read while one writes;
# synchronous=NORMAL is safe in WAL mode (the queue on disk, not the database,
# is what must survive a crash, and it is fsynced separately).
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 10000,
    "foreign_keys": 1,
    "cache_size": -16000,
}


def open_database(url: str) -> pw.Database:
    """Open the database at ``url`` and bind the models to it."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        database = pw.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, timeout=10)
    else:
        database = _connect_url(url)
    models.db.initialize(database)
    return database


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.py"))


def applied(database: pw.Database) -> set[str]:
    if not database.table_exists("schema_version"):
        return set()
    return {row.name for row in models.SchemaVersion.select()}


def migrate(database: pw.Database, upto: str | None = None) -> list[str]:
    """Apply every migration not yet applied, in number order (up to and
    including the one named ``upto``, when given: upgrade tests use it)."""
    done = applied(database)
    ran = []
    for path in migration_files():
        if upto is not None and path.stem > upto:
            break
        if path.stem in done:
            continue
        spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with database.atomic():
            module.up(database)
            if not database.table_exists("schema_version"):
                database.create_tables([models.SchemaVersion])
            models.SchemaVersion.create(name=path.stem)
        log.info("event=migrate applied=%s", path.stem)
        ran.append(path.stem)
    return ran


def pending(database: pw.Database) -> list[str]:
    done = applied(database)
    return [p.stem for p in migration_files() if p.stem not in done]
