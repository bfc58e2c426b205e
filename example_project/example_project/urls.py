from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Delivery events: POST /mailapi/webhooks/resend/ (or sendr, emitlo).
    path("mailapi/", include("django_mailapi.urls")),
]
