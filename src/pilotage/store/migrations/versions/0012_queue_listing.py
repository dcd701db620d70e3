"""Listing a big queue: an index of jobs by state, then job id (cluster, proc), and owner.

Its entries answer, without reading the jobs' rows, a page of the queue in job id order
(``GET /api/v1/jobs``), one state at a time, and the per-batch counts of ``pilotage q``
(``GET /api/v1/batches``): both read only the index.

Revision ID: 0012_queue_listing
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0012_queue_listing"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_state_cluster", "jobs", ["state", "cluster_id", "proc_id", "owner"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_cluster", table_name="jobs")
