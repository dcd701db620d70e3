"""HTCondor habits: a job's accounting group and notification as columns (fair share
sums running cpus per owner and group; the mailer picks the jobs that asked for mail),
the end of running jobs' streamed stdout ('pilotage tail'), and the mail sent per job
event.

Revision ID: 0009_htcondor
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_htcondor"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("acct_group", sa.String(128), nullable=True))
        batch.add_column(sa.Column("notification", sa.SmallInteger, nullable=True))
    op.create_table(
        "job_tails",
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("claim_id", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mail_notices",
        sa.Column("event_id", BigId, sa.ForeignKey("job_events.id"), primary_key=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("mail_notices")
    op.drop_table("job_tails")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notification")
        batch.drop_column("acct_group")
