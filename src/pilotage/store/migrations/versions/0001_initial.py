"""The first schema: clusters, jobs and their events, sandboxes, pilots, claims.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("num_jobs", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", BigId, sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("proc_id", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("ad", sa.Text, nullable=False),
        sa.Column("request_cpus", sa.Integer, nullable=False),
        sa.Column("request_memory_mb", sa.Integer, nullable=False),
        sa.Column("request_disk_mb", sa.Integer, nullable=False),
        sa.Column("request_gpus", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("qdate", sa.Float, nullable=False),
        sa.Column("entered_state_at", sa.Float, nullable=False),
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
        sa.UniqueConstraint("cluster_id", "proc_id", name="uq_jobs_cluster_proc"),
    )
    op.create_index("ix_jobs_state_prio", "jobs", ["state", "priority", "id"])
    op.create_index("ix_jobs_owner_state", "jobs", ["owner", "state"])
    op.create_table(
        "job_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("claim_id", sa.String(64), nullable=True),
        sa.Column("pilot_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "sandboxes",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(256), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pilots",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("disk_mb", sa.Integer, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("ad", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("retire", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("exit_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_pilots_state", "pilots", ["state"])
    op.create_table(
        "claims",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("pilot_id", sa.String(64), sa.ForeignKey("pilots.id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("lease_expires_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.Column("request_cpus", sa.Integer, nullable=False),
        sa.Column("request_memory_mb", sa.Integer, nullable=False),
        sa.Column("request_disk_mb", sa.Integer, nullable=False),
        sa.Column("request_gpus", sa.Integer, nullable=False),
    )
    op.create_index("ix_claims_job_id", "claims", ["job_id"])
    op.create_index("ix_claims_state_lease", "claims", ["state", "lease_expires_at"])
    op.create_index("ix_claims_pilot_state", "claims", ["pilot_id", "state"])


def downgrade() -> None:
    for table in ("claims", "pilots", "sandboxes", "job_events", "jobs", "clusters"):
        op.drop_table(table)
