"""Rollout strategy per environment (all, rolling batches, canary with a pause)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain add/drop column (no batch mode): on SQLite a table rebuild would cascade-delete
    # environment_hosts through its foreign key. Existing environments keep releasing "all".
    op.add_column(
        "environments", sa.Column("strategy", sa.String(length=20), server_default="all", nullable=False)
    )
    op.add_column("environments", sa.Column("batch_size", sa.Integer(), nullable=True))
    op.add_column("environments", sa.Column("canary_size", sa.Integer(), server_default="1", nullable=False))
    op.add_column("environments", sa.Column("canary_pause", sa.Float(), nullable=True))


def downgrade() -> None:
    for column in ("canary_pause", "canary_size", "batch_size", "strategy"):
        op.drop_column("environments", column)
