# One image for every MailConsole process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MAILCONSOLE_VAR_DIR=/var/lib/mailconsole
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000 2525
CMD ["python", "-m", "gunicorn", "mailconsole.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2"]
