"""The credential store: stored credentials, delegations, retrieval keys, login nonces,
VO membership, and the audit of every attempt.

A branch of its own from 0001 (provisioning adds 0002 on another); the store upgrades
every head.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stored_credentials",
        sa.Column("owner", sa.String(256), primary_key=True),
        sa.Column("identity_dn", sa.String(512), nullable=False),
        sa.Column("identity_rfc4514", sa.String(512), nullable=False),
        sa.Column("chain_pem", sa.Text, nullable=False),
        sa.Column("key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("limited", sa.Boolean, nullable=False),
        sa.Column("not_after", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "retrieval_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("claim_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("pilot_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.UniqueConstraint("claim_id", "generation", name="uq_retrieval_keys_claim_generation"),
    )
    op.create_table(
        "login_nonces",
        sa.Column("nonce_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_index("ix_login_nonces_expires_at", "login_nonces", ["expires_at"])
    op.create_table(
        "vo_members",
        sa.Column("identity", sa.String(512), primary_key=True),
        sa.Column("fqan", sa.String(256), primary_key=True),
        sa.Column("added_by", sa.String(256), nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_table(
        "credential_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("caller", sa.String(512), nullable=False),
        sa.Column("pilot_id", sa.String(64), nullable=True),
        sa.Column("claim_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("identity", sa.String(512), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_credential_audit_at", "credential_audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_credential_audit_at", "credential_audit")
    op.drop_index("ix_login_nonces_expires_at", "login_nonces")
    for table in (
        "credential_audit",
        "vo_members",
        "login_nonces",
        "retrieval_keys",
        "delegations",
        "stored_credentials",
    ):
        op.drop_table(table)
