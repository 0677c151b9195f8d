from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from . import checks  # noqa: F401, PLC0415  registers the system checks once apps load
        from .api import schema  # noqa: F401, PLC0415  registers the Bearer scheme with drf-spectacular
