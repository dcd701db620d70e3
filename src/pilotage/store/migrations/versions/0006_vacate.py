"""Claims given back (docs/pilot-protocol.md, "Give a claim back"): the jobs a pilot must
not get again for a while, and the owner a single-user pilot is locked to.

Revision ID: 0006_vacate
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_vacate"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable and read from the pilot's row the dispatch path already holds, so the
    # common pilot (no exclusion, not single-user) costs nothing more.
    with op.batch_alter_table("pilots") as batch:
        batch.add_column(sa.Column("single_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("exclusions", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pilots") as batch:
        batch.drop_column("exclusions")
        batch.drop_column("single_owner")
