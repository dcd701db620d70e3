"""Web sign-in links and sessions remember the token they came from, so that revoking
the token ends the sessions it opened.

Revision ID: 0013_web_token
Revises: 0008_web
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_web_token"
down_revision = "0008_web"
depends_on = None
branch_labels = None


def upgrade() -> None:
    for table in ("web_login_links", "web_sessions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("token_id", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("web_login_links", "web_sessions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("token_id")
