"""Inventory of the AWS things the portal manages (not user logins): the desired state."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F
from django.urls import reverse

from portal.fields import EncryptedTextField, UnreadableSecret

from . import validators as v
from .choices import (
    BROKER_PENDING_REASONS,
    DEFAULT_AGENT_POLICY_NAME,
    DEFAULT_MEMBER_ROLE_NAME,
    DEFAULT_READ_POLICY_NAME,
    DEFAULT_SERVICE_ROLE_NAME,
    EKS_RUNTIMES,
    AgentKind,
    AgentRuntime,
    BrokerMode,
    BrokerServer,
    BrokerState,
    BrokerStatus,
    ExternalIdState,
    Lifecycle,
    OnLeave,
)


class ManagementAccess(models.Model):
    """How the portal reaches an account: assume this role, or (blank) use the base credentials."""

    management_role_arn = models.CharField(max_length=2048, blank=True, validators=[v.validate_role_arn])
    management_external_id = models.CharField(
        max_length=1224, blank=True, validators=[v.validate_external_id, v.validate_not_formula]
    )

    class Meta:
        abstract = True


class AgentIdentity(ManagementAccess):
    """The IAM role or user the Container Registry Agent runs as, in the agent account."""

    name = models.SlugField(max_length=64, unique=True, help_text="The portal's name for this agent.")
    kind = models.CharField(max_length=8, choices=AgentKind.choices, default=AgentKind.ROLE)
    account_id = models.CharField(max_length=12, validators=[v.validate_account_id])
    iam_name = models.CharField(max_length=64, validators=[v.validate_iam_name])
    policy_name = models.CharField(
        max_length=128, default=DEFAULT_AGENT_POLICY_NAME, validators=[v.validate_policy_name]
    )
    status = models.CharField(max_length=8, choices=Lifecycle.choices, default=Lifecycle.DRAFT, db_index=True)
    # Where a role agent runs, and what its trust names there (see clean() for which runtime needs what).
    runtime = models.CharField(max_length=20, choices=AgentRuntime.choices, default=AgentRuntime.EC2)
    cluster_arn = models.CharField(
        max_length=2048,
        blank=True,
        validators=[v.validate_cluster_arn],
        help_text="ECS: the cluster its tasks run in (optional); EKS Pod Identity: the cluster.",
    )
    oidc_issuer = models.CharField(
        max_length=255,
        blank=True,
        validators=[v.validate_oidc_issuer],
        help_text="EKS IRSA: the cluster's OIDC issuer URL.",
    )
    oidc_thumbprint = models.CharField(
        max_length=40,
        blank=True,
        validators=[v.validate_thumbprint],
        help_text="EKS IRSA: create the OIDC provider when it is missing, with this thumbprint.",
    )
    namespace = models.CharField(max_length=63, blank=True, validators=[v.validate_k8s_namespace])
    service_account = models.CharField(
        max_length=253, blank=True, validators=[v.validate_k8s_service_account]
    )
    broker_mode = models.CharField(max_length=9, choices=BrokerMode.choices, default=BrokerMode.CLASSIC)
    # Agent-policy coalescing: every account change bumps `policy_generation`; whoever writes the
    # policy records the generation it wrote, so waiters already covered skip their write.
    policy_generation = models.PositiveBigIntegerField(default=0)
    synced_generation = models.PositiveBigIntegerField(default=0)
    layout = models.CharField(max_length=32, blank=True, help_text="Last written permission layout.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "agent identities"
        permissions = [("manage_agentidentity", "Can add agents and change their IAM setup")]
        constraints = [
            models.UniqueConstraint(
                fields=["account_id", "kind", "iam_name"], name="unique_agent_iam_identity"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:{self.kind}/{self.iam_name}"

    @property
    def on_eks(self) -> bool:
        return self.kind == AgentKind.ROLE and self.runtime in EKS_RUNTIMES

    def clean(self) -> None:
        """Each runtime's parameters, and only those: a stray one would name a cluster nothing uses."""
        errors = _runtime_errors(self)
        if errors:
            raise ValidationError(errors)

    @property
    def is_universal(self) -> bool:
        return self.broker_mode == BrokerMode.UNIVERSAL

    def get_absolute_url(self) -> str:
        return reverse("accounts:agent_detail", args=[self.pk])

    def bump_policy_generation(self, **also: object) -> None:
        """The agent's permissions must be written again (an account joined or left): one atomic
        UPDATE, so concurrent bumps never lose one. `also` sets other fields in the same statement."""
        AgentIdentity.objects.filter(pk=self.pk).update(policy_generation=F("policy_generation") + 1, **also)


RUNTIME_PARAMETERS = {
    AgentRuntime.EC2: (),
    AgentRuntime.ECS: ("cluster_arn",),
    AgentRuntime.EKS_IRSA: ("cluster_arn", "oidc_issuer", "oidc_thumbprint", "namespace", "service_account"),
    AgentRuntime.EKS_POD_IDENTITY: ("cluster_arn", "namespace", "service_account"),
}
_REQUIRED = {
    AgentRuntime.EKS_IRSA: ("oidc_issuer", "namespace", "service_account"),
    AgentRuntime.EKS_POD_IDENTITY: ("cluster_arn", "namespace", "service_account"),
}


def _runtime_errors(agent: AgentIdentity) -> dict[str, str]:
    if agent.kind == AgentKind.USER and agent.runtime != AgentRuntime.EC2:
        return {"runtime": "An IAM user agent has no runtime (its access keys work anywhere): use a role."}
    runtime = AgentRuntime(agent.runtime) if agent.runtime in AgentRuntime.values else AgentRuntime.EC2
    allowed = RUNTIME_PARAMETERS[runtime] if agent.kind == AgentKind.ROLE else ()
    errors = {
        name: f"Only for {', '.join(r for r, names in RUNTIME_PARAMETERS.items() if name in names)} agents."
        for name in ("cluster_arn", "oidc_issuer", "oidc_thumbprint", "namespace", "service_account")
        if getattr(agent, name) and name not in allowed
    }
    errors.update(
        {
            name: f"Required for a {runtime} agent."
            for name in _REQUIRED.get(runtime, ())
            if not getattr(agent, name)
        }
    )
    if agent.cluster_arn and "cluster_arn" not in errors:
        errors.update(_cluster_errors(agent, runtime))
    return errors


def _cluster_errors(agent: AgentIdentity, runtime: AgentRuntime) -> dict[str, str]:
    try:
        service, _, account_id, _ = v.cluster_arn_parts(agent.cluster_arn)
    except (ValueError, IndexError):
        return {}  # the field's own validator says what is wrong
    wanted = "ecs" if runtime == AgentRuntime.ECS else "eks"
    if service != wanted:
        return {"cluster_arn": f"A {runtime} agent runs in an {wanted.upper()} cluster: arn:aws:{wanted}:…"}
    if account_id != agent.account_id and runtime != AgentRuntime.EKS_IRSA:
        # A task or pod gets a role of its own account only (iam:PassRole does not cross accounts).
        return {"cluster_arn": f"The cluster must be in the agent's account {agent.account_id}."}
    return {}


class EcrAccount(ManagementAccess):
    """An AWS account holding ECR repositories, scanned through one broker per region."""

    account_id = models.CharField(max_length=12, unique=True, validators=[v.validate_account_id])
    alias = models.CharField(max_length=100, blank=True, validators=[v.validate_not_formula])
    agent = models.ForeignKey(AgentIdentity, on_delete=models.PROTECT, related_name="accounts")
    service_role_name = models.CharField(
        max_length=64, default=DEFAULT_SERVICE_ROLE_NAME, validators=[v.validate_iam_name]
    )
    read_policy_name = models.CharField(
        max_length=128, default=DEFAULT_READ_POLICY_NAME, validators=[v.validate_policy_name]
    )
    status = models.CharField(max_length=8, choices=Lifecycle.choices, default=Lifecycle.DRAFT, db_index=True)
    # Resources that existed before the portal touched them (hand-made from the guide).
    role_adopted = models.BooleanField(default=False)
    policy_adopted = models.BooleanField(default=False)
    drifted = models.BooleanField(default=False, db_index=True)
    # Set when an organization's sync onboarded it: only such accounts are offboarded when they leave.
    organization = models.ForeignKey(
        "Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="accounts"
    )
    onboarding_rule = models.ForeignKey(
        "OnboardingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="accounts"
    )
    last_audit_at = models.DateTimeField(null=True, blank=True)
    last_audit_summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id"]
        verbose_name = "ECR account"
        permissions = [
            ("onboard_ecraccount", "Can onboard, reconcile and rotate ECR accounts"),
            ("offboard_ecraccount", "Can offboard ECR accounts"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} ({self.alias})" if self.alias else self.account_id

    @property
    def service_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.service_role_name}"

    @property
    def read_policy_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:policy/{self.read_policy_name}"

    def get_absolute_url(self) -> str:
        return reverse("accounts:account_detail", args=[self.account_id])


class ExternalId(models.Model):
    """An sts:ExternalId the service role's trust accepts. Two at once only during rotation."""

    account = models.ForeignKey(EcrAccount, on_delete=models.CASCADE, related_name="external_ids")
    value = models.CharField(
        max_length=1224, validators=[v.validate_broker_external_id, v.validate_not_formula]
    )
    state = models.CharField(max_length=8, choices=ExternalIdState.choices, default=ExternalIdState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    retiring_since = models.DateTimeField(null=True, blank=True)
    # When a run first made the service role's trust accept this id: broker files switch to a new
    # id only from then on, so a broker redeployed early never holds an id AWS still refuses.
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = "ExternalId"
        constraints = [
            models.UniqueConstraint(fields=["account", "value"], name="unique_external_id_per_account")
        ]

    def __str__(self) -> str:
        return self.value

    @staticmethod
    def generate() -> str:
        return str(uuid.uuid4())


class BrokerInstance(models.Model):
    """One Snyk Broker client for one ECR account and region."""

    # Shown where the token would be used when no key decrypts it (a rotated ENCRYPTION_KEYS).
    TOKEN_UNREADABLE = "token unreadable — re-enter or rotate"

    account = models.ForeignKey(EcrAccount, on_delete=models.CASCADE, related_name="brokers")
    region = models.CharField(max_length=32, validators=[v.validate_region])
    broker_token = EncryptedTextField(validators=[v.validate_uuid4])
    broker_client_url = models.CharField(
        max_length=255,
        blank=True,
        validators=[v.validate_service_url],
        help_text="How the CRA reaches this broker client, e.g. http://broker:8000",
    )
    cr_agent_url = models.CharField(
        max_length=255,
        blank=True,
        validators=[v.validate_service_url],
        help_text="How the broker reaches the Container Registry Agent, e.g. http://cra:8081",
    )
    broker_server_url = models.CharField(
        max_length=64, choices=BrokerServer.choices, default=BrokerServer.DEFAULT
    )
    port = models.PositiveIntegerField(
        default=8000, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    status = models.CharField(
        max_length=8, choices=BrokerStatus.choices, default=BrokerStatus.ACTIVE, db_index=True
    )
    # Set once a Universal Broker connection serves this account and region (its integration exists):
    # the classic broker client is no longer needed and its files are no longer offered. The broker
    # row stays active: it is what the connection is made from.
    classic_retired_at = models.DateTimeField(null=True, blank=True)
    # The existing Snyk Org the operator chose for this registry (snyk_org_map): integrated into,
    # never created. Blank: the portal finds or creates "ECR <account> <region>" in the tenant's group.
    snyk_org_id = models.CharField(max_length=36, blank=True, validators=[v.validate_snyk_id])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account__account_id", "region"]
        permissions = [("download_brokerinstance", "Can download broker files holding the token")]
        constraints = [
            models.UniqueConstraint(fields=["account", "region"], name="unique_broker_region"),
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535), name="broker_port_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account.account_id}/{self.region}"

    @staticmethod
    def generate_token() -> str:
        return str(uuid.uuid4())

    @property
    def token_readable(self) -> bool:
        """False when no key of ENCRYPTION_KEYS decrypts the stored token (pages say so)."""
        try:
            _ = self.broker_token  # reading decrypts
        except UnreadableSecret:
            return False
        return True

    @property
    def pending_reason(self) -> str:
        """Why this broker's files are not ready ("" once its account is onboarded, or retired)."""
        if self.status == BrokerStatus.RETIRED:
            return ""
        return BROKER_PENDING_REASONS.get(Lifecycle(self.account.status), "")

    @property
    def state(self) -> str:
        if self.status == BrokerStatus.RETIRED:
            return BrokerState.RETIRED
        return BrokerState.PENDING if self.pending_reason else BrokerState.ACTIVE

    def get_state_display(self) -> str:
        return BrokerState(self.state).label

    @property
    def masked_token(self) -> str:
        """The token's last four characters ("" when it is blank or unreadable)."""
        if not self.token_readable or not self.broker_token:
            return ""
        return f"••••••••-••••-••••-••••-••••••••{self.broker_token[-4:]}"


class Organization(ManagementAccess):
    """An AWS organization, read through its management account (or a delegated administrator)."""

    name = models.SlugField(max_length=64, unique=True, help_text="The portal's name for this organization.")
    account_id = models.CharField(
        max_length=12,
        validators=[v.validate_account_id],
        help_text="The management account, or a delegated administrator's account.",
    )
    organization_id = models.CharField(max_length=34, blank=True, help_text="o-…, learnt by discovery.")
    # Off: a sync that finds new or leaving accounts waits for an operator to confirm its plan.
    auto_apply = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("provisioning:organization_detail", args=[self.name])


class OrganizationSnapshot(models.Model):
    """The whole tree as one discovery read it: OUs with their paths, accounts with state and tags.

    `tree` = {"organization_id", "roots": [{id, name}], "units": [{id, name, parent_id, path}],
    "accounts": [{id, name, email, state, parent_id, path, tags}]} (paths as AWS's `Paths` would be,
    built by the walk: moto's accounts carry none).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="snapshots")
    run_id = models.PositiveIntegerField(null=True, blank=True)  # the run that read it
    taken_at = models.DateTimeField(auto_now_add=True, db_index=True)
    tree = models.JSONField(default=dict)

    class Meta:
        ordering = ["-taken_at", "-pk"]
        get_latest_by = "taken_at"

    def __str__(self) -> str:
        return f"{self.organization.name} at {self.taken_at:%Y-%m-%d %H:%M}"


class OnboardingRule(models.Model):
    """Which organization accounts the portal onboards, and how. Rules apply in `position` order;
    the first that matches an account decides (an excluded account matches no rule of this one)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField()
    agent = models.ForeignKey(AgentIdentity, on_delete=models.PROTECT, related_name="onboarding_rules")
    regions = models.JSONField(default=list)
    # Matchers: every one given must hold (an account in one of the OUs, and named like the glob...).
    ou_ids = models.JSONField(default=list, blank=True)
    include_children = models.BooleanField(default=False)
    account_ids = models.JSONField(default=list, blank=True)
    name_glob = models.CharField(max_length=256, blank=True, validators=[v.validate_glob])
    email_glob = models.CharField(max_length=256, blank=True, validators=[v.validate_glob])
    tag_key = models.CharField(max_length=128, blank=True)
    tag_value = models.CharField(max_length=256, blank=True)
    exclude = models.JSONField(default=list, blank=True)
    member_role_name = models.CharField(
        max_length=64, default=DEFAULT_MEMBER_ROLE_NAME, validators=[v.validate_iam_name]
    )
    broker_client_url_template = models.CharField(max_length=255, blank=True)
    cr_agent_url_template = models.CharField(max_length=255, blank=True)
    on_leave = models.CharField(max_length=8, choices=OnLeave.choices, default=OnLeave.OFFBOARD)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "position"], name="unique_rule_position")
        ]

    def __str__(self) -> str:
        return f"{self.organization.name} rule {self.position}"


class SnykTenant(models.Model):
    """The Snyk connection: the tenant the portal manages Universal Broker resources in.

    The token (a Tenant Admin's personal API token) is stored encrypted and never shown again.
    `app_*` is the Broker App install whose client id and secret every deployment runs with.
    """

    tenant_id = models.CharField(max_length=36, unique=True, validators=[v.validate_snyk_id])
    api_url = models.CharField(max_length=255, validators=[v.validate_snyk_api_url])
    token = EncryptedTextField()
    # Where the Broker App is installed, and where new Orgs are created (blank: Orgs are mapped).
    app_org_id = models.CharField(max_length=36, blank=True, validators=[v.validate_snyk_id])
    group_id = models.CharField(max_length=36, blank=True, validators=[v.validate_snyk_id])
    app_install_id = models.CharField(max_length=36, blank=True)
    app_client_id = models.CharField(max_length=64, blank=True)
    app_client_secret = EncryptedTextField(blank=True)
    # Who the token belongs to, from the last connection test (GET /rest/self).
    user_id = models.CharField(max_length=36, blank=True)
    user_name = models.CharField(max_length=255, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Snyk connection"

    def __str__(self) -> str:
        return f"Snyk tenant {self.tenant_id} ({self.api_url})"

    @classmethod
    def current(cls) -> SnykTenant | None:
        """The one tenant the portal works in (the latest connected)."""
        return cls.objects.order_by("-pk").first()

    @property
    def broker_server_url(self) -> str:
        # As snyk-broker-config prints it: the API host with //api. replaced by //broker.
        return self.api_url.replace("//api.", "//broker.")


class SnykDeployment(models.Model):
    """One Universal Broker deployment serving (at most SNYK_CONNECTIONS_PER_DEPLOYMENT of) an agent's
    connections: its own client replicas, DEPLOYMENT_ID and files. Its ordinal names it in Snyk."""

    tenant = models.ForeignKey(SnykTenant, on_delete=models.PROTECT, related_name="deployments")
    agent = models.ForeignKey(AgentIdentity, on_delete=models.PROTECT, related_name="snyk_deployments")
    ordinal = models.PositiveIntegerField()
    deployment_id = models.CharField(max_length=36, blank=True, help_text="Snyk's id, once created.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent__name", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "agent", "ordinal"], name="unique_snyk_deployment")
        ]
        permissions = [("download_snykdeployment", "Can download deployment files holding the client secret")]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """How the portal finds it again among the tenant's deployments (metadata.name)."""
        return f"{self.agent.name}-{self.ordinal}"


class SnykConnection(models.Model):
    """The Universal Broker `ecr` connection of one broker (account and region), its Org and integration.

    The deployment is chosen when the row is made and never changes: Snyk cannot move a connection.
    """

    broker = models.OneToOneField(BrokerInstance, on_delete=models.CASCADE, related_name="snyk_connection")
    deployment = models.ForeignKey(SnykDeployment, on_delete=models.PROTECT, related_name="connections")
    connection_id = models.CharField(max_length=36, blank=True)
    org_id = models.CharField(max_length=36, blank=True, validators=[v.validate_snyk_id])
    org_mapped = models.BooleanField(default=False, help_text="The operator chose the Org (never created).")
    integration_id = models.CharField(max_length=36, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment_id", "broker__account__account_id", "broker__region"]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """Unique per deployment and `^[\\w-]+$`: `<account>-<region>`."""
        return f"{self.broker.account.account_id}-{self.broker.region}"
