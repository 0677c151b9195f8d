"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

Every service command is parsed by the program it names (manage.py's own parsers, gunicorn's
and celery's command-line parsers), its targets are imported, and every file it refers to exists.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("migrate", "web", "worker", "beat")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose interpolation with the defaults written in the file ("x" for required values)."""
    return INTERPOLATION.sub(lambda m: m["arg"] if m["op"] in ("-", ":-") else "x", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def command_of(service: dict) -> list[str]:
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return [interpolate(str(w)) for w in words]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def check_command(words: list[str]) -> None:
    """Parse `words` with the program's own parser and import what it runs."""
    program, args = words[0], words[1:]
    if program == "python" and args[0] == "manage.py":
        from django.core.management import get_commands, load_command_class

        name = args[1]
        commands = get_commands()
        assert name in commands, f"manage.py has no command {name!r}"
        command = load_command_class(commands[name], name)
        command.create_parser("manage.py", name).parse_args(args[2:])
    elif program == "gunicorn":
        from gunicorn.config import Config

        parsed = Config().parser().parse_args(args)
        (target,) = parsed.args
        module, _, attribute = target.partition(":")
        application = getattr(importlib.import_module(module), attribute)
        assert callable(application)
    elif program == "celery":
        from celery import Celery
        from celery.bin.base import CLIContext
        from celery.bin.celery import celery as cli

        assert args[0] in ("-A", "--app")
        app = importlib.import_module(args[1]).celery_app
        assert isinstance(app, Celery)
        subcommand = args[2]
        assert subcommand in cli.commands, f"celery has no {subcommand!r} command"
        obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
        cli.commands[subcommand].make_context(subcommand, args[3:], obj=obj)  # raises on a bad option
    else:
        pytest.fail(f"unexpected program {program!r} in {words}")


def test_the_production_stack_has_every_service(compose):
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    assert compose["services"]["redis"]["image"].startswith("redis:")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_commands_run_things_that_exist(compose, name):
    service = compose["services"][name]
    assert service["build"] == "."
    check_command(command_of(service))


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_the_compose_database_and_redis(compose, name):
    environment = compose["services"][name]["environment"]
    assert environment["DATABASE_URL"].startswith("postgres://")
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert "AWS_ENDPOINT_URL" not in environment  # production talks to real AWS
    for required in ("SECRET_KEY", "ENCRYPTION_KEYS"):
        assert ":?" in environment[required], f"{required} must be required by compose"


def test_web_serves_with_gunicorn_and_whitenoise(compose):
    from django.conf import settings

    assert command_of(compose["services"]["web"])[0] == "gunicorn"
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE


def test_dependencies_name_services_that_exist(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_named_volumes_are_declared(compose):
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"]


def test_health_checks_are_valid(compose):
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD" and test[1] == "python":
            assert test[2] == "-c"
            compile(test[3], f"{name} healthcheck", "exec")
            assert "/healthz" in test[3]


def test_env_file_is_the_documented_one_and_never_committed(compose):
    for name in APP_SERVICES:
        assert compose["services"][name]["env_file"] == ".env"
    assert ENV_EXAMPLE.is_file()
    assert "/.env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_copies_files_that_exist_and_runs_the_web(compose):
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    copies = [args.split() for op, args in instructions if op == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    copied = {Path(s).parts[0] for *sources, _ in copies for s in sources}
    for package in (
        "manage.py",
        "portal",
        "accounts",
        "provisioning",
        "templates",
        "static",
        "requirements.txt",
    ):
        assert package in copied
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert "manage.py collectstatic" in runs
    (cmd,) = [args for op, args in instructions if op == "CMD"]
    import json

    check_command(json.loads(cmd))
    assert ("USER", "portal") in instructions  # not root


def test_programs_the_services_run_are_pinned_requirements(compose):
    requirements = (ROOT / "requirements.txt").read_text().lower()
    for program in ("gunicorn", "celery", "whitenoise", "psycopg", "redis", "django"):
        assert re.search(rf"^{program}(\[[^\]]*\])?==", requirements, re.M), program


def settings_variables() -> set[str]:
    source = (ROOT / "portal" / "settings.py").read_text()
    names = set(
        # env.str(...) and the settings' own readers (_bool, _int, _raw, ...).
        re.findall(
            r"""(?:\.|\b_)(?:str|bool|int|float|list|tuple|dict|json|db|url|path|raw|database)\(\s*["'](\w+)["']""",
            source,
        )
    )
    for secret in re.findall(r"""_secret\(\s*["'](\w+)["']""", source):
        names |= {secret, f"{secret}_FILE"}
    return names


def documented_variables() -> set[str]:
    return set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), re.M))


def test_env_example_documents_every_setting():
    names = settings_variables()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "PORTAL_VAR_DIR"} <= names
    assert names - documented_variables() == set()


def test_env_example_documents_every_compose_variable():
    used = {m["name"] for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    assert used - documented_variables() == set()


def test_env_example_documents_the_embedded_run_and_real_aws():
    from portal.management.commands import run_embedded

    text = ENV_EXAMPLE.read_text()
    for name in re.findall(r"""_env_int\(\s*["'](\w+)["']""", Path(run_embedded.__file__).read_text()):
        assert f"{name}=" in text
    assert "PORTAL_ADMIN_PASSWORD=" in text
    assert "AWS_ACCESS_KEY_ID=" in text
    # Uncommented assignments must not point the embedded run at servers or real AWS.
    active = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        assert name not in active, f"{name} must stay commented out in .env.example"


def test_the_gunicorn_config_names_only_gunicorn_settings_and_is_used_everywhere(compose):
    """compose, the image and `make run` serve with portal/gunicorn_config.py: threads, a deep backlog."""
    from gunicorn.config import Config

    from portal import gunicorn_config

    known = Config().settings
    names = {name for name in vars(gunicorn_config) if not name.startswith("_") and name != "os"}
    assert names <= set(known), names - set(known)
    assert gunicorn_config.worker_class == "gthread" and gunicorn_config.threads > 1
    assert gunicorn_config.backlog >= 200
    (cmd,) = [args for op, args in dockerfile_instructions() if op == "CMD"]
    import json

    for words in (command_of(compose["services"]["web"]), json.loads(cmd)):
        assert "python:portal.gunicorn_config" in words
