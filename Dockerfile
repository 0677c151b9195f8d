# The portal's one image: web (gunicorn + whitenoise), worker and beat differ only by command
# (see docker-compose.yml). Nothing secret is baked in: settings come from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=portal.settings \
    PORTAL_VAR_DIR=/var/lib/portal

WORKDIR /app

RUN groupadd --system portal \
    && useradd --system --gid portal --home-dir /app --shell /usr/sbin/nologin portal \
    && mkdir -p /var/lib/portal \
    && chown portal:portal /var/lib/portal

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY manage.py ./
COPY portal ./portal
COPY accounts ./accounts
COPY provisioning ./provisioning
COPY templates ./templates
COPY static ./static

# Static files are collected into the image and served by whitenoise. collectstatic runs only the
# staticfiles checks, so this throwaway key never meets the secret-key check (portal.E001).
RUN SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput --verbosity 0

USER portal
EXPOSE 8000
CMD ["gunicorn", "--config", "python:portal.gunicorn_config", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
