"""The test URLconf with django_mailapi.urls mounted, as a project receiving webhooks has it.

Not the suite's default (tests/urls.py): with it, system check mailapi.W004 reports the
missing WEBHOOK_SECRET in every test that replaces MAILAPI.
"""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("mailapi/", include("django_mailapi.urls")),
]
