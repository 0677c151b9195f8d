"""The lifecycle panel of the account page (rotation state, retire/redeploy/offboard buttons)."""

from django import template

from provisioning import lifecycle

register = template.Library()


@register.inclusion_tag("accounts/_lifecycle.html", takes_context=True)
def lifecycle_panel(context, account):
    """Reads the account's prefetched ExternalIds and brokers; one audit query while rotating."""
    return {
        "account": account,
        "rotation": lifecycle.rotation_status(account),
        "can_onboard": context.get("can_onboard", False),
        "can_offboard": context.get("can_offboard", False),
        "csrf_token": context.get("csrf_token"),
    }
