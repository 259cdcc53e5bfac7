"""Settings for the SMTP, POP3 and IMAP worker processes (`run_smtpd`, `run_pop3d`, `run_imapd`).

The web's settings with only the apps whose models a worker reads. Admin, DRF, the OpenAPI schema
and the Celery app never load, which halves a worker's resident memory (about 89 to 45 MiB after
`django.setup()`); the supervisor starts workers with this module (`WORKER_SETTINGS_MODULE`).
"""

from mailconsole.settings import *  # noqa: F403

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "servers",
]
MIDDLEWARE = []
# A worker sends no Celery tasks; the reconcile loop and the web do.
LOAD_CELERY_APP = False
