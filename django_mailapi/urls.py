"""Mount under any prefix: ``path("mailapi/", include("django_mailapi.urls"))``.

``POST <prefix>webhooks/<provider>/`` (name ``mailapi-webhook``) receives a provider's
delivery events; see ``django_mailapi.webhooks``.
"""

from django.urls import path

from .webhooks import webhook

urlpatterns = [
    path("webhooks/<str:provider>/", webhook, name="mailapi-webhook"),
]
