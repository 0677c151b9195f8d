from django.db import models


class AgentKind(models.TextChoices):
    ROLE = "role", "IAM role (EC2 instance profile)"
    USER = "user", "IAM user (access keys)"


class Lifecycle(models.TextChoices):
    DRAFT = "draft", "Draft"
    PENDING = "pending", "Onboarding"
    ACTIVE = "active", "Active"
    FAILED = "failed", "Failed"
    REMOVED = "removed", "Removed"


class ExternalIdState(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRING = "retiring", "Retiring"


class BrokerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class BrokerServer(models.TextChoices):
    DEFAULT = "https://broker.snyk.io", "Default (broker.snyk.io)"
    EU = "https://broker.eu.snyk.io", "EU (broker.eu.snyk.io)"
    AU = "https://broker.au.snyk.io", "AU (broker.au.snyk.io)"
    US = "https://broker.us.snyk.io", "US (broker.us.snyk.io)"


# The guide's names, used as defaults.
DEFAULT_ROLE_AGENT_NAME = "SnykCraEc2Role"
DEFAULT_USER_AGENT_NAME = "SnykCraUser"
DEFAULT_AGENT_POLICY_NAME = "SnykCraAssumeRolePolicy"
DEFAULT_SERVICE_ROLE_NAME = "SnykEcrServiceRole"
DEFAULT_READ_POLICY_NAME = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
