"""``python -m django_mailapi.sandbox``: run the sandbox provider until Ctrl-C."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from django_mailapi.sandbox.dialects import DIALECTS
from django_mailapi.sandbox.server import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_mailapi.sandbox",
        description="Run the sandbox email provider on loopback.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared with ``manage.py mailapi_sandbox``."""
    parser.add_argument(
        "--provider",
        choices=list(DIALECTS),
        default="resend",
        help="Whose wire format to speak (default: resend).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Loopback address to bind.")
    parser.add_argument("--port", type=int, default=8025, help="Port (0 picks a free one).")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="Requests per second per API key before answering 429 (default: no limit).",
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="Fraction of sends (0.0-1.0) that answer 500 or drop the connection.",
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed for --fail-rate.")
    parser.add_argument(
        "--api-key", default=None, help="Accept only this bearer key (default: any key)."
    )
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="Post signed delivery events of each accepted email to this loopback URL "
        "(e.g. http://127.0.0.1:8000/mailapi/webhooks/resend/).",
    )
    parser.add_argument(
        "--webhook-secret",
        default=None,
        help="The secret that signs them (for resend: whsec_<base64>); needed with --webhook-url.",
    )
    parser.add_argument(
        "--schema",
        default=None,
        metavar="PATH",
        help="Check every email against this JSON Schema file, as a real API validates "
        "what it receives; one that fails answers 422 validation_error. Needs jsonschema.",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    parser.add_argument("--verbose", action="store_true", help="Log every request.")
    args = parser.parse_args(argv)
    try:
        run(
            args.host,
            args.port,
            rate_limit=args.rate_limit,
            fail_rate=args.fail_rate,
            seed=args.seed,
            api_key=args.api_key,
            verbose=args.verbose,
            provider=args.provider,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            schema=args.schema,
        )
    except (ValueError, OSError, ImportError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
