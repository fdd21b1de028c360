"""web view: users (argon2 hashes, lockout, session epoch), web settings (session key),
and an index on contact names for the support search

Revision ID: 0011_web_users
Revises: 0010_snapshot_verp_secret
Create Date: 2026-12-06 00:30:00
"""
import sqlalchemy as sa
from alembic import op

from notify.models import UTCDateTime

revision = '0011_web_users'
down_revision = '0010_snapshot_verp_secret'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.Text(), nullable=False),
        sa.Column('failed_logins', sa.Integer(), nullable=False),
        sa.Column('locked_until', UTCDateTime(), nullable=True),
        sa.Column('session_epoch', sa.Integer(), nullable=False),
        sa.Column('last_login_at', UTCDateTime(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'web_settings',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_name', ['name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_name')
    op.drop_table('web_settings')
    op.drop_table('users')
