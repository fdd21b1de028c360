"""template_versions: a campaign's notices stored at load; campaigns point to their version

Revision ID: 0007_snapshot_template_versions
Revises: 0006_harden_evidence

Sending renders from the stored files, never from a folder, so workers need none and a
message keeps the version it was rendered from (messages.template_version holds its sha256).
A campaign loaded before this revision has no stored version: loading it again stores one.
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_snapshot_template_versions'
down_revision = '0006_harden_evidence'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'template_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('files', sa.Text(), nullable=False),
        sa.Column('origin', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256'),
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_campaigns_template_version', 'template_versions',
                                    ['template_version_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_constraint('fk_campaigns_template_version', type_='foreignkey')
        batch_op.drop_column('template_version_id')
    op.drop_table('template_versions')
