"""The "Mail API" admin, one module per model family.

- :mod:`.outbox`: outbound emails, with their failed attempts and message;
- :mod:`.failures`: failed sends and the error reference page;
- :mod:`.quota`: org quotas with usage bars, the usage chart, usage counters;
- :mod:`.events`: delivery events, as providers reported them (read-only);
- :mod:`.suppressions`: the suppression list (the one list with add and delete).

:mod:`.base` holds what they share: the read-only base admin, bounded filters and
counts. Importing the package registers every admin with the default site.
"""

from __future__ import annotations

from . import events, failures, outbox, quota, suppressions
from .base import BoundedCountPaginator, ReadOnlyAdmin

__all__ = [
    "BoundedCountPaginator",
    "ReadOnlyAdmin",
    "events",
    "failures",
    "outbox",
    "quota",
    "suppressions",
]
