"""Counts in words for run explanations, logs and command output ("1 account", "3 accounts"):
Django's ngettext picks the form, as `pluralize` does in templates."""

from django.utils.translation import ngettext


def counted(count: int, singular: str, plural: str) -> str:
    return ngettext("%(count)d " + singular, "%(count)d " + plural, count) % {"count": count}
