"""Indexes for the admin at scale: search by recipient and subject, and scheduled emails.

The partial index on ``send_at`` serves the email list's "scheduled" filter (few emails
have one). The rest of this docstring is about the search.

The admin searches emails (recipients, subject) and delivery events (recipient) with
``icontains``, which PostgreSQL runs as
``UPPER(column) LIKE UPPER('%term%')``; a B-tree cannot serve that, so on a table of a
million emails each search read the whole table. A GIN index of ``UPPER(column)`` with
``gin_trgm_ops`` (the ``pg_trgm`` extension) serves it for terms of three characters or
more. Other databases get nothing here: their search stays a scan (README, "Admin at
scale").

Creating the extension needs a role that may (``pg_trgm`` is a trusted extension, so
the database's owner may, from PostgreSQL 13). Where that is refused, the migration logs
a warning with the statements to run by hand and leaves the indexes out rather than
failing the deployment. On a large outbox, build the indexes beforehand without blocking
writes (the same statements with ``CONCURRENTLY``) and this migration finds them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, migrations, models, transaction

logger = logging.getLogger("django_mailapi")

#: (index name, model, column).
TRIGRAM_INDEXES = (
    ("mailapi_email_recipients_trgm", "OutboundEmail", "recipients"),
    ("mailapi_email_subject_trgm", "OutboundEmail", "subject"),
    ("mailapi_event_recipient_trgm", "DeliveryEvent", "recipient"),
)


def statements(apps: Any) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS {name} ON "
        f"{apps.get_model('django_mailapi', model)._meta.db_table} "
        f"USING gin (UPPER({column}) gin_trgm_ops)"
        for name, model, column in TRIGRAM_INDEXES
    ]


def create(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as exc:
            logger.warning(
                "django_mailapi: the pg_trgm extension could not be created (%s), so the "
                "admin's search by recipient and subject scans its tables. To index it, "
                "run as a superuser: CREATE EXTENSION pg_trgm; %s;",
                exc,
                "; ".join(statements(apps)),
            )
            return
        for sql in statements(apps):
            cursor.execute(sql)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name, _model, _column in TRIGRAM_INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("django_mailapi", "0007_suppressions")]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
        migrations.AddIndex(
            model_name="outboundemail",
            index=models.Index(
                condition=models.Q(("send_at__isnull", False)),
                fields=["send_at"],
                name="mailapi_email_send_at",
            ),
        ),
    ]
