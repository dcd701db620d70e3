"""Pilot provisioning: entry ads from factories, frontends' requests, validation reports.

A branch of its own from 0001 (the credential store is 0003 on another); the store
upgrades every head.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "entry_ads",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("factory", sa.String(256), nullable=False),
        sa.Column("ad", sa.Text, nullable=False),
        sa.Column("pilots", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pilot_requests",
        sa.Column("frontend", sa.String(256), primary_key=True),
        sa.Column("entry", sa.String(64), primary_key=True),
        sa.Column("idle_wanted", sa.Integer, nullable=False),
        sa.Column("max_running", sa.Integer, nullable=False),
        sa.Column("removal", sa.String(16), nullable=False),
        sa.Column("remove_idle", sa.Integer, nullable=False),
        sa.Column("switch_mode", sa.String(16), nullable=False),
        sa.Column("pilot_token", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "validation_reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reporter", sa.String(256), nullable=False),
        sa.Column("entry", sa.String(64), nullable=False),
        sa.Column("pilot", sa.String(128), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_validation_reports_entry_at", "validation_reports", ["entry", "at"])


def downgrade() -> None:
    op.drop_index("ix_validation_reports_entry_at", table_name="validation_reports")
    op.drop_table("validation_reports")
    op.drop_table("pilot_requests")
    op.drop_table("entry_ads")
