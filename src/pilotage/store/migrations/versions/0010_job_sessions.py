"""Sessions inside running jobs (exec-in-job, ssh-to-job): the audit of every attempt.

Revision ID: 0010_job_sessions
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_job_sessions"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(256), nullable=True),
        sa.Column("caller", sa.String(256), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("command", sa.Text, nullable=True),
        sa.Column("tty", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claim_id", sa.String(64), nullable=True),
        sa.Column("pilot_id", sa.String(64), nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("end_reason", sa.Text, nullable=True),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_job_sessions_at", "job_sessions", ["at"])
    op.create_index("ix_job_sessions_job_id", "job_sessions", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_sessions_job_id", "job_sessions")
    op.drop_index("ix_job_sessions_at", "job_sessions")
    op.drop_table("job_sessions")
