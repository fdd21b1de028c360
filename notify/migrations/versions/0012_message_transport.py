"""messages.transport (where each message went: smtp:HOST, twilio, outbox) and reset tokens
indexed by message (links are counted when their message is handed over)

Revision ID: 0012_message_transport
Revises: 0011_web_users
Create Date: 2026-12-06 00:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_message_transport'
down_revision = '0011_web_users'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases: a batch copy of messages on SQLite
    # would drop the tally triggers (0004) that live on it.
    op.add_column('messages', sa.Column('transport', sa.String(length=200), nullable=True))
    op.create_index('ix_reset_tokens_message', 'reset_tokens', ['message_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_reset_tokens_message', table_name='reset_tokens')
    op.drop_column('messages', 'transport')  # SQLite 3.35+ drops a column in place
