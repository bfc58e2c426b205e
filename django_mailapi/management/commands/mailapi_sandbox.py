"""``manage.py mailapi_sandbox``: run the sandbox provider until Ctrl-C.

The work is done by :func:`django_mailapi.sandbox.run`; this only parses arguments.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_mailapi.sandbox import run
from django_mailapi.sandbox.__main__ import add_arguments


class Command(BaseCommand):
    help = "Run the sandbox email provider on loopback until Ctrl-C."
    # The sandbox needs none of django-mailapi's settings, so it runs before they are set.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run(
                options["host"],
                options["port"],
                rate_limit=options["rate_limit"],
                fail_rate=options["fail_rate"],
                seed=options["seed"],
                api_key=options["api_key"],
                verbose=options["verbosity"] >= 2,
                announce=self._announce,
                provider=options["provider"],
                webhook_url=options["webhook_url"],
                webhook_secret=options["webhook_secret"],
                schema=options["schema"],
            )
        except (ValueError, OSError, ImportError) as error:
            raise CommandError(str(error)) from error

    def _announce(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
