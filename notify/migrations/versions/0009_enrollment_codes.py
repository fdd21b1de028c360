"""credit-monitoring enrollment codes: a pool per campaign, one code per contact

Revision ID: 0009_enrollment_codes
Revises: 0008_tallies_by_round
Create Date: 2026-12-06 00:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_enrollment_codes'
down_revision = '0008_tallies_by_round'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'enrollment_codes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=128), nullable=False),
        sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=True),
        sa.Column('assigned_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('campaign_id', 'code', name='uq_enrollment_codes_code'),
        sa.UniqueConstraint('contact_id', name='uq_enrollment_codes_contact'),
    )
    op.create_index('ix_enrollment_codes_free', 'enrollment_codes',
                    ['campaign_id', 'contact_id', 'id'], unique=False)
    # The code a contact's notices show (a copy of enrollment_codes.code, written in the
    # same transaction that assigns it, so rendering needs no join).
    op.add_column('contacts', sa.Column('enrollment_code', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('enrollment_code')
    op.drop_index('ix_enrollment_codes_free', table_name='enrollment_codes')
    op.drop_table('enrollment_codes')
