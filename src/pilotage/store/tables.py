"""The tables of the pool's database (SQLAlchemy Core), shared by SQLite and PostgreSQL.

The schema itself is created and changed only by the migrations in
``store/migrations``; a test checks that these definitions and the migrated database
agree. Times are Unix epoch seconds (float) so both backends treat them alike.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: The jobs whose ad has a ``periodic_*`` expression (the policy sweep's), as the
#: condition of a partial index: a query uses it when it states this condition as it is.
PERIODIC = "ad LIKE '%Periodic%'"

#: 64-bit keys on PostgreSQL; SQLite's autoincrement needs the plain INTEGER type.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

clusters = sa.Table(
    "clusters",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(256), nullable=False),
    # open: allocated, jobs not yet committed; committed: its jobs exist.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("num_jobs", sa.Integer, nullable=False, server_default="0"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("cluster_id", BigId, sa.ForeignKey("clusters.id"), nullable=False),
    sa.Column("proc_id", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JobSpec as JSON
    sa.Column("ad", sa.Text, nullable=False),  # the job's ClassAd, printed
    sa.Column("request_cpus", sa.Integer, nullable=False),
    sa.Column("request_memory_mb", sa.Integer, nullable=False),
    sa.Column("request_disk_mb", sa.Integer, nullable=False),
    sa.Column("request_gpus", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("qdate", sa.Float, nullable=False),
    sa.Column("entered_state_at", sa.Float, nullable=False),
    # Invariant: claim_id is set exactly when state is RUNNING.
    sa.Column("claim_id", sa.String(64), nullable=True),
    sa.Column("pilot_id", sa.String(64), nullable=True),
    sa.Column("site", sa.String(128), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("exit_signal", sa.Integer, nullable=True),
    sa.Column("hold_reason", sa.Text, nullable=True),
    sa.Column("hold_code", sa.Integer, nullable=True),
    sa.Column("wall_s", sa.Float, nullable=True),
    sa.Column("cpu_s", sa.Float, nullable=True),
    sa.Column("max_rss_kb", sa.BigInteger, nullable=True),
    sa.Column("output_sandbox", sa.String(64), nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    # The job's AcctGroup (fair share sums running cpus per owner and group) and its
    # JobNotification (0-3: who gets mail); both copied from the ad (migration 0009).
    sa.Column("acct_group", sa.String(128), nullable=True),
    sa.Column("notification", sa.SmallInteger, nullable=True),
    sa.UniqueConstraint("cluster_id", "proc_id", name="uq_jobs_cluster_proc"),
    sa.Index("ix_jobs_state_prio", "state", "priority", "id"),
    sa.Index("ix_jobs_owner_state", "owner", "state"),
    # Pages of the queue in job id order and per-batch counts, from the index alone
    # (migration 0012).
    sa.Index("ix_jobs_state_cluster", "state", "cluster_id", "proc_id", "owner"),
    # The jobs the policy sweep reads every reap interval, and those alone (migration 0012).
    sa.Index(
        "ix_jobs_periodic",
        "state",
        sqlite_where=sa.text(PERIODIC),
        postgresql_where=sa.text(PERIODIC),
    ),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=True),  # NULL for the submit event
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("claim_id", sa.String(64), nullable=True),
    sa.Column("pilot_id", sa.String(64), nullable=True),
)

sandboxes = sa.Table(
    "sandboxes",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # SHA-256 of the tar stream
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(256), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: The sandboxes themselves when the spool is in the database (``[server] spool``,
#: migration 0011): each tar stream in pieces of at most 1 MiB, ``seq`` from 0.
sandbox_chunks = sa.Table(
    "sandbox_chunks",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

pilots = sa.Table(
    "pilots",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(256), nullable=False),  # the pilot token's subject
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("cpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("disk_mb", sa.Integer, nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("ad", sa.Text, nullable=False),  # the slot ad as registered (whole resources)
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active, exited, lost
    sa.Column("retire", sa.Boolean, nullable=False, server_default=sa.false()),
    # Drained by an admin: no new claim; its running jobs finish (docs/operations.md).
    sa.Column("drain", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("exit_reason", sa.Text, nullable=True),
    # SHA-256 (hex) of the secret answered at registration; every later call of the
    # pilot proves it. NULL only for pilots registered before secrets: they can do nothing.
    sa.Column("secret_sha256", sa.String(64), nullable=True),
    # A single-user pilot's owner, once its first job fixed it (docs/pilot.md).
    sa.Column("single_owner", sa.String(128), nullable=True),
    # Jobs this pilot gave back and must not get again before a time: JSON {job id: until}.
    sa.Column("exclusions", sa.Text, nullable=True),
    sa.Index("ix_pilots_state", "state"),
)

claims = sa.Table(
    "claims",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("pilot_id", sa.String(64), sa.ForeignKey("pilots.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("lease_expires_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active, ended
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("end_reason", sa.String(64), nullable=True),
    sa.Column("request_cpus", sa.Integer, nullable=False),
    sa.Column("request_memory_mb", sa.Integer, nullable=False),
    sa.Column("request_disk_mb", sa.Integer, nullable=False),
    sa.Column("request_gpus", sa.Integer, nullable=False),
    sa.Index("ix_claims_state_lease", "state", "lease_expires_at"),
    sa.Index("ix_claims_pilot_state", "pilot_id", "state"),
)

# --- The credential store (migration 0003): see pilotage.credentials and docs/security.md.

#: One delegated X.509 credential per owner; its private key sealed (AES-GCM, store.key).
stored_credentials = sa.Table(
    "stored_credentials",
    metadata,
    sa.Column("owner", sa.String(256), primary_key=True),
    # Invariant: a re-delegation never changes identity_rfc4514 (it is refused instead).
    sa.Column("identity_dn", sa.String(512), nullable=False),
    sa.Column("identity_rfc4514", sa.String(512), nullable=False),
    sa.Column("chain_pem", sa.Text, nullable=False),  # certificates only, leaf first
    sa.Column("key_sealed", sa.LargeBinary, nullable=False),
    sa.Column("limited", sa.Boolean, nullable=False),
    sa.Column("not_after", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: A delegation in progress: the key pair the server made, waiting for the signed proxy.
delegations = sa.Table(
    "delegations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("key_sealed", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

#: One-time keys that let a claim's pilot fetch its job's credential (stored hashed).
retrieval_keys = sa.Table(
    "retrieval_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # SHA-256 hex of the key
    sa.Column("claim_id", sa.String(64), nullable=False),
    # 0: the key handed out with the claim; n+1: the key returned with release n.
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("pilot_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.UniqueConstraint("claim_id", "generation", name="uq_retrieval_keys_claim_generation"),
)

#: Login nonces (stored hashed); each is spent by the first attempt that names it.
login_nonces = sa.Table(
    "login_nonces",
    metadata,
    sa.Column("nonce_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("used_at", sa.Float, nullable=True),
)

#: VO membership: the FQANs (groups and roles) each identity holds.
vo_members = sa.Table(
    "vo_members",
    metadata,
    sa.Column("identity", sa.String(512), primary_key=True),
    sa.Column("fqan", sa.String(256), primary_key=True),
    sa.Column("added_by", sa.String(256), nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)

#: Every delegation and release attempt, granted or refused (also as JSON lines on disk).
credential_audit = sa.Table(
    "credential_audit",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("event", sa.String(32), nullable=False),  # delegate, key, release
    sa.Column("outcome", sa.String(16), nullable=False),  # granted, refused
    sa.Column("caller", sa.String(512), nullable=False),
    sa.Column("pilot_id", sa.String(64), nullable=True),
    sa.Column("claim_id", sa.String(64), nullable=True),
    sa.Column("job_id", sa.String(32), nullable=True),  # CLUSTER.PROC
    sa.Column("identity", sa.String(512), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)

# --- Pilot provisioning (migration 0002): see pilotage.api.provisioning.

#: Each factory entry's ad, as its factory last advertised it, with its pilot counts.
entry_ads = sa.Table(
    "entry_ads",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    # Invariant: only the factory that first advertised an entry updates it.
    sa.Column("factory", sa.String(256), nullable=False),
    sa.Column("ad", sa.Text, nullable=False),  # JSON: attribute -> literal
    sa.Column("pilots", sa.Text, nullable=False),  # JSON: counts by state, total and per frontend
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: What each frontend wants at each entry (the constant-pressure request).
pilot_requests = sa.Table(
    "pilot_requests",
    metadata,
    sa.Column("frontend", sa.String(256), primary_key=True),
    sa.Column("entry", sa.String(64), primary_key=True),
    sa.Column("idle_wanted", sa.Integer, nullable=False),
    sa.Column("max_running", sa.Integer, nullable=False),
    sa.Column("removal", sa.String(16), nullable=False),  # none, idle, all
    sa.Column("remove_idle", sa.Integer, nullable=False),
    sa.Column("switch_mode", sa.String(16), nullable=False),  # required, optional, never
    sa.Column("pilot_token", sa.Text, nullable=True),  # handed to the factory only
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: Pilots' validation outcomes (the bootstrap's ``pilotage-validation`` lines).
validation_reports = sa.Table(
    "validation_reports",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reporter", sa.String(256), nullable=False),
    sa.Column("entry", sa.String(64), nullable=False),
    sa.Column("pilot", sa.String(128), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: further structured fields
    sa.Index("ix_validation_reports_entry_at", "entry", "at"),
)

fairshare_state = sa.Table(
    "fairshare_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # one row: the accountant's state
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("saved_at", sa.Float, nullable=False),
)

priority_factors = sa.Table(
    "priority_factors",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),  # a submitter: owner or group.owner
    sa.Column("factor", sa.Float, nullable=False),
    sa.Column("set_by", sa.String(256), nullable=False),
    sa.Column("set_at", sa.Float, nullable=False),
)

issued_tokens = sa.Table(
    "issued_tokens",
    metadata,
    # Every token the server minted (admin, frontend, X.509 login), by its jti; a
    # revoked one is refused on every call (pilotage.credentials.revocation).
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("groups", sa.Text, nullable=False),  # JSON list of FQANs
    sa.Column("issued_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("issued_by", sa.String(512), nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_by", sa.String(512), nullable=True),
    sa.Column("revoke_reason", sa.Text, nullable=True),
    sa.Index("ix_issued_tokens_subject", "subject"),
    sa.Index("ix_issued_tokens_expires_at", "expires_at"),
)

# --- The web pages (migration 0008_web): see pilotage.web and docs/web.md.

#: One-time sign-in links that ``pilotage web`` prints (stored hashed; spent once).
web_login_links = sa.Table(
    "web_login_links",
    metadata,
    sa.Column("link_hash", sa.String(64), primary_key=True),  # SHA-256 hex of the secret
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("groups", sa.Text, nullable=False),  # JSON list of FQANs
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("used_at", sa.Float, nullable=True),
    # The session the link opens ends no later than this (the caller's own credential).
    sa.Column("session_until", sa.Float, nullable=False),
    # The token the caller came with, if any: revoking it ends the session (0013).
    sa.Column("token_id", sa.String(64), nullable=True),
)

#: Browser sessions (the cookie's secret, stored hashed).
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("groups", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("token_id", sa.String(64), nullable=True),
)

# Time-range reads of the pages: history by completion time, the pool's recent events.
sa.Index("ix_jobs_completed_at", jobs.c.completed_at)
sa.Index("ix_job_events_at", job_events.c.at)

# --- HTCondor habits (migration 0009_htcondor): streamed output, notification mail.

job_tails = sa.Table(
    "job_tails",
    metadata,
    # The end of a running job's stdout as its agent streamed it (stream_output), for
    # 'pilotage tail'; bounded (queue/tails.py). ``offset``: bytes of stdout before ``data``.
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("claim_id", sa.String(64), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

mail_notices = sa.Table(
    "mail_notices",
    metadata,
    # One row per job event that called for mail (queue/notify.py): the primary key makes
    # one server of several send it; ``status`` sending, sent or failed.
    sa.Column("event_id", BigId, sa.ForeignKey("job_events.id"), primary_key=True),
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
)

# --- Sessions inside running jobs (migration 0010): see pilotage.queue.sessions.

#: Every exec-in-job and ssh-to-job attempt, granted or refused (docs/security.md).
job_sessions = sa.Table(
    "job_sessions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),  # CLUSTER.PROC as asked
    sa.Column("owner", sa.String(256), nullable=True),  # the job's owner (None: no such job)
    sa.Column("caller", sa.String(256), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # exec, shell
    sa.Column("command", sa.Text, nullable=True),  # JSON list; None for a shell
    sa.Column("tty", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # refused, waiting, open, ended
    sa.Column("claim_id", sa.String(64), nullable=True),
    sa.Column("pilot_id", sa.String(64), nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),  # the pilot joined
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("end_reason", sa.Text, nullable=True),  # why, or the refusal
    sa.Column("bytes_in", sa.BigInteger, nullable=False),  # to the job
    sa.Column("bytes_out", sa.BigInteger, nullable=False),  # from the job
)
