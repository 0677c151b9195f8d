from django.db import models


class AgentKind(models.TextChoices):
    ROLE = "role", "IAM role (runs on EC2, ECS or EKS: see its runtime)"
    USER = "user", "IAM user (access keys)"


class AgentRuntime(models.TextChoices):
    """Where a role agent runs, which decides whom its role trusts (a user agent's keys work anywhere)."""

    EC2 = "ec2", "EC2 instance (instance profile)"
    ECS = "ecs", "ECS task (task role)"
    EKS_IRSA = "eks-irsa", "EKS pod (IRSA: the cluster's OIDC provider)"
    EKS_POD_IDENTITY = "eks-pod-identity", "EKS pod (Pod Identity association)"


# Runtimes whose agent runs in a Kubernetes namespace under a service account.
EKS_RUNTIMES = (AgentRuntime.EKS_IRSA, AgentRuntime.EKS_POD_IDENTITY)


class BrokerMode(models.TextChoices):
    """How an agent's accounts reach Snyk: a classic broker per account and region (files handed to
    the user), or Universal Broker connections the portal creates through Snyk's API."""

    CLASSIC = "classic", "Classic (one broker per account and region)"
    UNIVERSAL = "universal", "Universal Broker (connections managed through Snyk's API)"


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


class BrokerState(models.TextChoices):
    """What pages call a broker: its stored status, or pending while its account is not onboarded
    (the service role its files name does not exist yet)."""

    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


# Why a broker of an account in this lifecycle state has no file yet.
BROKER_PENDING_REASONS = {
    Lifecycle.DRAFT: "the account is not onboarded yet (its service role does not exist); "
    "confirm the onboarding plan first.",
    Lifecycle.PENDING: "the account is being onboarded; its files are ready once the onboarding run "
    "has succeeded.",
    Lifecycle.FAILED: "the account's onboarding failed (its service role may not exist); retry the "
    "onboarding first.",
}


class BrokerServer(models.TextChoices):
    DEFAULT = "https://broker.snyk.io", "Default (broker.snyk.io)"
    EU = "https://broker.eu.snyk.io", "EU (broker.eu.snyk.io)"
    AU = "https://broker.au.snyk.io", "AU (broker.au.snyk.io)"
    US = "https://broker.us.snyk.io", "US (broker.us.snyk.io)"


class SnykApiHost(models.TextChoices):
    """Snyk's regional API hosts (regional-hosting-and-data-residency); SNYK_API_URL picks the default."""

    US_01 = "https://api.snyk.io", "SNYK-US-01 (api.snyk.io)"
    US_02 = "https://api.us.snyk.io", "SNYK-US-02 (api.us.snyk.io)"
    EU_01 = "https://api.eu.snyk.io", "SNYK-EU-01 (api.eu.snyk.io)"
    AU_01 = "https://api.au.snyk.io", "SNYK-AU-01 (api.au.snyk.io)"


# The guide's names, used as defaults.
DEFAULT_ROLE_AGENT_NAME = "SnykCraEc2Role"
DEFAULT_USER_AGENT_NAME = "SnykCraUser"
DEFAULT_AGENT_POLICY_NAME = "SnykCraAssumeRolePolicy"
DEFAULT_SERVICE_ROLE_NAME = "SnykEcrServiceRole"
DEFAULT_READ_POLICY_NAME = "AmazonEC2ContainerRegistryReadOnlyForSnyk"


# --- AWS Organizations ----------------------------------------------------------------------------

# The role Organizations creates in every account it creates, trusting the management account.
DEFAULT_MEMBER_ROLE_NAME = "OrganizationAccountAccessRole"


class OnLeave(models.TextChoices):
    OFFBOARD = "offboard", "Retire brokers and offboard"
    KEEP = "keep", "Keep as it is"


class OrgAccountStatus(models.TextChoices):
    """An organization account as the portal sees it (the organization page's tree)."""

    NOT_MANAGED = "not-managed", "Not managed"
    DRAFT = "draft", "Draft"
    PENDING = "pending", "Onboarding"
    ACTIVE = "active", "Active"
    DRIFTED = "drifted", "Drifted"
    FAILED = "failed", "Failed"
    REMOVED = "removed", "Offboarded"
    LEFT = "left", "Left the organization"
    SUSPENDED = "suspended", "Suspended or closed"


# Where an EKS agent runs unless told otherwise: the namespace of the broker files' Helm releases and
# the service account name Snyk's chart uses by default.
DEFAULT_K8S_NAMESPACE = "snyk-broker"
DEFAULT_K8S_SERVICE_ACCOUNT = "snyk-broker"
