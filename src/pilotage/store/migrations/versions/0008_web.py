"""The web pages (docs/web.md): one-time sign-in links and browser sessions, both stored
hashed; and the indexes the pages' time-range reads need (history by completion time,
the pool's recent job events).

Revision ID: 0008_web
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_web"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_login_links",
        sa.Column("link_hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("session_until", sa.Float, nullable=False),
    )
    op.create_index("ix_web_login_links_expires_at", "web_login_links", ["expires_at"])
    op.create_table(
        "web_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_index("ix_jobs_completed_at", "jobs", ["completed_at"])
    op.create_index("ix_job_events_at", "job_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_job_events_at", "job_events")
    op.drop_index("ix_jobs_completed_at", "jobs")
    op.drop_index("ix_web_sessions_expires_at", "web_sessions")
    op.drop_table("web_sessions")
    op.drop_index("ix_web_login_links_expires_at", "web_login_links")
    op.drop_table("web_login_links")
