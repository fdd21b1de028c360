"""drop ix_messages_reach: the tallies (0004) answer what it served, and every status change
paid to maintain it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 00:50:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_reach')


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_reach', ['campaign_id', 'contact_id', 'status'],
                              unique=False)
