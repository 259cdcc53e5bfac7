from django.apps import AppConfig
from django.conf import settings


class ServersConfig(AppConfig):
    name = "servers"
    verbose_name = "Mail servers"

    def ready(self) -> None:
        if getattr(settings, "LOAD_CELERY_APP", True):
            # Shared tasks are sent through the current app, so it must exist before the first send
            # in every process that sends (web, CLI, Celery itself). Workers skip its 19 MiB.
            import mailconsole.celery  # noqa: F401
