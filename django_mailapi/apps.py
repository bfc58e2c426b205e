from django.apps import AppConfig


class MailapiConfig(AppConfig):
    name = "django_mailapi"
    verbose_name = "Mail API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
