"""MailConsole's Django project. The Celery app is loaded by `servers.apps.ServersConfig.ready`."""
