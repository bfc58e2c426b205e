"""The emails every scenario sends: the same for us, the peer and the raw ceiling."""

from __future__ import annotations

from typing import Any

FROM = "Benchmark <bench@example.com>"
TEXT = (
    "Hello,\n\nyour order has shipped and should arrive within three working days. "
    "You can follow the parcel from your account page.\n\n" * 4
) + "Thank you for shopping with us.\n"
HTML = (
    "<html><body>"
    + "".join(f"<p>{line}</p>" for line in TEXT.splitlines() if line)
    + ("</body></html>")
)


def recipient(run: str, i: int) -> str:
    return f"{run}-{i}@example.com"


def subject(run: str, i: int) -> str:
    return f"Your order {run}-{i} has shipped"


def django_messages(run: str, n: int) -> list[Any]:
    """``n`` EmailMultiAlternatives (text + HTML), one recipient each."""
    from django.core.mail import EmailMultiAlternatives

    messages = []
    for i in range(n):
        message = EmailMultiAlternatives(
            subject=subject(run, i), body=TEXT, from_email=FROM, to=[recipient(run, i)]
        )
        message.attach_alternative(HTML, "text/html")
        messages.append(message)
    return messages


def resend_body(run: str, i: int) -> dict[str, Any]:
    """The same email as Resend's SendEmailRequest JSON."""
    return {
        "from": FROM,
        "to": [recipient(run, i)],
        "subject": subject(run, i),
        "text": TEXT,
        "html": HTML,
    }
