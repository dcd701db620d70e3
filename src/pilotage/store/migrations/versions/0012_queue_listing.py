"""Listing a big queue: an index of jobs by state, then job id (cluster, proc), and owner.

Its entries answer, without reading the jobs' rows, a page of the queue in job id order
(``GET /api/v1/jobs``), one state at a time, and the per-batch counts of ``pilotage q``
(``GET /api/v1/batches``): both read only the index. And a partial index of the jobs
with a ``periodic_*`` expression, which the policy sweep reads every reap interval:
without it, the sweep read every queued job's ad each time.

Revision ID: 0012_queue_listing
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_queue_listing"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_state_cluster", "jobs", ["state", "cluster_id", "proc_id", "owner"])
    where = sa.text("ad LIKE '%Periodic%'")  # as PERIODIC in store/tables.py
    op.create_index(
        "ix_jobs_periodic", "jobs", ["state"], sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_periodic", table_name="jobs")
    op.drop_index("ix_jobs_state_cluster", table_name="jobs")
