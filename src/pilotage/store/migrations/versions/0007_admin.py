"""Admin verbs (docs/operations.md): the tokens the server issued, so they can be listed
and revoked, and drained pilots (no new claim, running jobs finish).

Revision ID: 0007_admin
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_admin"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("issued_by", sa.String(512), nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("revoked_by", sa.String(512), nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_issued_tokens_subject", "issued_tokens", ["subject"])
    op.create_index("ix_issued_tokens_expires_at", "issued_tokens", ["expires_at"])
    with op.batch_alter_table("pilots") as batch:
        batch.add_column(sa.Column("drain", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("pilots") as batch:
        batch.drop_column("drain")
    op.drop_index("ix_issued_tokens_expires_at", "issued_tokens")
    op.drop_index("ix_issued_tokens_subject", "issued_tokens")
    op.drop_table("issued_tokens")
