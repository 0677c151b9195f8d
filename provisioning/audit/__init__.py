"""The audit: the engine's planner run read-only over every account and agent, plus security findings.

For each ECR account the audit reads the live service role, its trust, the policies attached to it
and the default version of the read-only policy; for each agent its permissions in every layout the
engine writes (the inline policy, other inline policies, the numbered managed policies). The
planner's plan for the account *is* its drift; the findings add what a plan alone does not say
("the trust lets anyone assume the role"). Each finding has a stable code, a severity and a plain
message.

For universal agents the audit also reads the Snyk side, once per run (the install's deployments,
their connections, each connection's integrations) and checks each connection against IAM's live
trust and the inventory. Classic agents never call Snyk. If Snyk cannot be read the AWS side is
still audited and a finding (snyk-unreadable) and the run's result say so.

Reads run concurrently on a bounded thread pool (settings.AUDIT_CONCURRENCY). The threads only talk
to AWS: the database is read before and written after, in the run's own thread, so one slow or
unreachable account delays nobody and no thread holds a database connection. Nothing is written
to AWS. New findings of high severity are logged at WARNING and, when AUDIT_WEBHOOK_URL is set,
posted by a separate Celery task that retries and never holds up or fails the audit.

What is where (import from the module, this package re-exports nothing):

- catalogue: the checks (Check, CHECKS, HIGH_RANK), Finding, public_finding, severity_counts, worst.
- documents: pure parsing of IAM documents: statements, allows_action, principals_of, the ExternalId
  conditions, the sts:AssumeRole grants (Grant, grants_in), a document's size.
- reads: what is read: AccountFacts (database), AccountRead and AgentRead (AWS), GrantIndex,
  read_account and read_agent, and the pool's helpers (concurrency, gauge).
- snyk_reads: the Snyk side's facts (SnykFacts, database) and read (SnykRead, read_snyk: Snyk).
- trust_rules: trust_findings, the findings on who a service role's trust lets in, and
  ids_accepted_from (the ExternalIds the trust accepts from the agent).
- snyk_rules: snyk_findings, the cross-system findings (connections against IAM and the inventory,
  integrations, deployments).
- rules: the account's other findings (read_policy_findings, account_findings, size_finding),
  account_status and account_documents.
- agent_rules: the agent's findings (agent_findings) and whether it may assume an account's role
  (agent_grant_findings).
- run: audit_scope and handle_audit_run (flows.AUDIT); cross_system_findings (the Snyk checks
  alone, read now).
- store: store_results, the snapshots and the run's result.
- notify: the WARNING log and the webhook (notify_new_findings, post_webhook).
- services: audit_request, the service that queues an audit.
- report: report, run_report, has_findings_or_drift (command line and JSON export).
"""
