"""gunicorn's settings, the same for compose's web service, the image's default command and `make run`.

`gunicorn -c python:portal.gunicorn_config portal.wsgi:application --bind HOST:PORT`. Threaded
workers (gthread): a page waiting on the database does not hold a whole process, and the listen
backlog queues bursts instead of resetting connections (Django's development server listens with a
backlog of 10 and reset connections beyond it). Static files: whitenoise (portal.settings).
"""

import os

wsgi_app = "portal.wsgi:application"
worker_class = "gthread"
# Processes (WEB_CONCURRENCY, as gunicorn reads it itself) × threads per process (WEB_THREADS).
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("WEB_THREADS") or 8)
backlog = 2048
timeout = 60
graceful_timeout = 20
# Idle keep-alive connections are held by a thread's poller, not by a worker thread.
keepalive = 5
