"""The outbox's search indexes cover settled emails only (sent, failed, cancelled).

A GIN trigram index takes dozens of entries per row version, and each email was written
three times on its way out (queued, claimed, sent), so the two indexes of migration 0008
cost the send path more than any other: measured on Celery's defaults, PostgreSQL spent
0.29 CPU-seconds per 2,000 emails with them, 0.21 with these, 0.16 with none
(README, "Benchmarks"). A row enters these only once it is settled. The admin's search
reads them for settled emails and the partial indexes of waiting and sending emails for
the rest (``OutboundEmailQuerySet.search``), so it finds every email as before.

As in 0008: nothing happens off PostgreSQL or where ``pg_trgm`` is missing (0008 said
so when it could not create it). On a large outbox, build the new indexes beforehand
without blocking writes, ``CREATE INDEX CONCURRENTLY`` with the statements below, and
this migration finds them and only drops the old ones.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

#: Settled statuses, as in models.SETTLED (a migration keeps its own copy).
SETTLED = ("sent", "failed", "cancelled")
#: (new partial index, the full index of 0008 it replaces, column).
INDEXES = (
    ("mailapi_email_recipients_settled", "mailapi_email_recipients_trgm", "recipients"),
    ("mailapi_email_subject_settled", "mailapi_email_subject_trgm", "subject"),
)


def _table(apps: Any) -> str:
    return str(apps.get_model("django_mailapi", "OutboundEmail")._meta.db_table)


def _has_trigrams(cursor: Any) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return cursor.fetchone() is not None


def _swap(apps: Any, schema_editor: Any, *, settled_only: bool) -> None:
    """Create one kind of index per column (IF NOT EXISTS: built beforehand is fine), then
    drop the other kind."""
    if schema_editor.connection.vendor != "postgresql":
        return
    statuses = ", ".join(f"'{status}'" for status in SETTLED)
    where = f" WHERE status IN ({statuses})" if settled_only else ""
    with schema_editor.connection.cursor() as cursor:
        if not _has_trigrams(cursor):
            return
        for name, old, column in INDEXES:
            wanted, unwanted = (name, old) if settled_only else (old, name)
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {wanted} ON {_table(apps)} "
                f"USING gin (UPPER({column}) gin_trgm_ops){where}"
            )
            cursor.execute(f"DROP INDEX IF EXISTS {unwanted}")


def partial(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, settled_only=True)


def full(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, settled_only=False)


class Migration(migrations.Migration):
    dependencies = [("django_mailapi", "0008_search_indexes")]

    operations = [migrations.RunPython(partial, full, elidable=False)]
