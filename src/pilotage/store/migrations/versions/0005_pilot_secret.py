"""Pilot secrets: the hash of the secret each registration answers (docs/security.md,
"Pilot registrations").

Revision ID: 0005_pilot_secret
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_pilot_secret"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: a pilot registered before this revision has no secret and can no longer
    # act; it is declared lost like any silent pilot and its jobs go back to the queue.
    with op.batch_alter_table("pilots") as batch:
        batch.add_column(sa.Column("secret_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pilots") as batch:
        batch.drop_column("secret_sha256")
