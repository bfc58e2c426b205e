from django.apps import AppConfig


class MailapiConfig(AppConfig):
    name = "django_mailapi"
    verbose_name = "Mail API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks, and the tasks dispatch.py publishes by name.
        from . import checks, tasks  # noqa: F401
