"""tests.settings with ON_QUOTA_EXCEEDED = "fail", for a worker of tests/test_quota_worker.py."""

from tests.settings import *  # noqa: F403
from tests.settings import MAILAPI

MAILAPI = {**MAILAPI, "ON_QUOTA_EXCEEDED": "fail"}
