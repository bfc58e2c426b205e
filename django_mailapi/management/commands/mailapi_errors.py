"""``manage.py mailapi_errors``: print the error catalogs."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django_mailapi import errors
from django_mailapi.management.arguments import MailapiCommand, add_format_argument, choice
from django_mailapi.management.output import Column, render_json, render_table

#: Keys of ``--format json``, in this order.
JSON_KEYS = ("provider", "code", "http_status", "message", "suggested_action", "retry")

COLUMNS = (
    Column("provider", "PROVIDER"),
    Column("code", "CODE"),
    Column("http", "HTTP"),
    Column("retry", "RETRY"),
    Column("suggested_action", "SUGGESTED ACTION", 80),
)


def catalog_rows(provider: str | None = None) -> list[dict[str, Any]]:
    """Every catalog entry (of one provider, or of all in the reference's order)."""
    entries = errors.all_entries()
    if provider is not None:
        entries = [e for e in entries if e.provider == provider]
    return [
        {
            "provider": e.provider,
            "code": e.code,
            "http_status": e.http_status,
            "message": e.message,
            "suggested_action": e.action,
            "retry": e.retry.value,
        }
        for e in entries
    ]


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return render_json(rows)
    table_rows = [
        {**row, "http": "local" if row["http_status"] is None else row["http_status"]}
        for row in rows
    ]
    return render_table(COLUMNS, table_rows)


class Command(MailapiCommand):
    help = "Print the error catalogs: code, HTTP status, retry class and suggested action."

    def add_arguments(self, parser: ArgumentParser) -> None:
        providers = list(errors.CATALOGS)
        parser.add_argument(
            "--provider",
            type=choice("provider", providers),
            choices=providers,
            help="only this catalog",
        )
        add_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(render(catalog_rows(options["provider"]), options["format"]))
