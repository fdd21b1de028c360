"""secrets: a random per-database key for VERP bounce tags (notify.verp)

Revision ID: 0010_snapshot_verp_secret
Revises: 0009_enrollment_codes

Made here, once per database, so that no command has to create it while others run; every
worker and every `bounces import` on this database then share it.
"""
import secrets
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

revision = '0010_snapshot_verp_secret'
down_revision = '0009_enrollment_codes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        'secrets',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    op.bulk_insert(table, [{"name": "verp", "value": secrets.token_hex(32), "created_at": now}])


def downgrade() -> None:
    op.drop_table('secrets')
