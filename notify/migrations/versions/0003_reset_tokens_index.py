"""index reset tokens by their reset (completion revokes the others)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 19:30:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reset_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_reset_tokens_reset', ['reset_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reset_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_reset_tokens_reset')
