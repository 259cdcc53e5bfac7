import os

from django.core.wsgi import get_wsgi_application

from mailconsole.var_dir import ensure_var_dir

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailconsole.settings")
# A web server started on its own (gunicorn mailconsole.wsgi) finds var/ and its keys like manage.py does.
ensure_var_dir()
application = get_wsgi_application()
