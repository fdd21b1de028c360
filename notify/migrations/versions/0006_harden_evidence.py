"""evidence that holds: append-only triggers on events and audit_log, events that outlive
what they describe, replayed callbacks stored once, reset completions with their receipt time

Revision ID: 0006_harden_evidence
Revises: 0005

* ``events`` and ``audit_log`` refuse UPDATE and DELETE in the database itself (and TRUNCATE
  on PostgreSQL), whatever code or SQL shell tries: the ORM guard in notify.audit only covers
  notify's own code. The one sanctioned change stays possible: an early Twilio callback
  (stored before its SID was known) is marked applied and linked to its message, nothing else
  of the row changing.
* The foreign keys of ``events`` go: a DELETE of a message or contact used to cascade into
  its events, which the triggers now refuse; the events stay, as the record of what happened
  to a row that no longer exists.
* ``events.replay_key`` (unique): the SHA-256 of a status callback's signed parameters, so a
  replayed callback is stored once.
* ``password_resets.completion_received_at``: when notify received a completion, beside the
  ``completed_at`` the identity provider claimed.
"""
from alembic import op
import sqlalchemy as sa

import notify.models

revision = '0006_harden_evidence'
down_revision = '0005'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# The only change an event may undergo: applied false -> true and its ids filled, the rest of
# the row unchanged. Written for SQLite (IS) and PostgreSQL (IS NOT DISTINCT FROM) below.
_SAME = ('id', 'provider_message_id', 'at', 'source', 'kind', 'detail', 'replay_key')
_FILLED = ('message_id', 'contact_id', 'campaign_id')


def _early_link(same: str) -> str:
    unchanged = ' AND '.join(f'NEW.{c} {same} OLD.{c}' for c in _SAME)
    filled = ' AND '.join(f'(OLD.{c} IS NULL OR NEW.{c} {same} OLD.{c})' for c in _FILLED)
    return (f'OLD.applied = {{false}} AND NEW.applied = {{true}} AND {unchanged} '
            f'AND {filled}')


SQLITE = [
    f"""CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
        WHEN NOT ({_early_link('IS').format(false='0', true='1')})
        BEGIN SELECT RAISE(ABORT, 'events are append-only: an event cannot be changed'); END""",
    """CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: an event cannot be deleted'); END""",
    """CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: a record cannot be changed');
        END""",
    """CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: a record cannot be deleted');
        END""",
]

POSTGRES = [
    f"""CREATE FUNCTION notify_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND
               {_early_link('IS NOT DISTINCT FROM').format(false='false', true='true')} THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'events are append-only: % refused', TG_OP;
        END $$""",
    """CREATE FUNCTION notify_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
        END $$""",
    """CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION notify_events_append_only()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION notify_refuse_rewrite()""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION notify_refuse_rewrite()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION notify_refuse_rewrite()""",
]


def _events_without_foreign_keys() -> sa.Table:
    """The events table as it is from this revision on (for SQLite's copy-and-rename)."""
    meta = sa.MetaData()
    return sa.Table(
        'events', meta,
        sa.Column('id', BIG_ID, primary_key=True),
        sa.Column('campaign_id', sa.Integer(), nullable=True),
        sa.Column('message_id', BIG_ID, nullable=True),
        sa.Column('contact_id', BIG_ID, nullable=True),
        sa.Column('provider_message_id', sa.String(length=255), nullable=True),
        sa.Column('at', notify.models.UTCDateTime(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('applied', sa.Boolean(), nullable=False),
        sa.Column('detail', notify.models.JSONText(), nullable=True),
        sa.Index('ix_events_campaign', 'campaign_id', 'id'),
        sa.Index('ix_events_message', 'message_id'),
        sa.Index('ix_events_pending_sid', 'provider_message_id'),
        sa.Index('ix_events_contact', 'contact_id'),
    )


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    with op.batch_alter_table('password_resets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('completion_received_at', notify.models.UTCDateTime(),
                                      nullable=True))
    if sqlite:
        # SQLite cannot drop a constraint: the table is copied without its foreign keys.
        with op.batch_alter_table('events', recreate='always',
                                  copy_from=_events_without_foreign_keys()) as batch_op:
            batch_op.add_column(sa.Column('replay_key', sa.String(length=64), nullable=True))
            batch_op.create_index('ix_events_replay_key', ['replay_key'], unique=True)
    else:
        for fk in sa.inspect(bind).get_foreign_keys('events'):
            if fk['name']:  # PostgreSQL names every constraint
                op.drop_constraint(fk['name'], 'events', type_='foreignkey')
        op.add_column('events', sa.Column('replay_key', sa.String(length=64), nullable=True))
        op.create_index('ix_events_replay_key', 'events', ['replay_key'], unique=True)
    for statement in SQLITE if sqlite else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        for name in ('events_append_only_update', 'events_append_only_delete',
                     'audit_log_append_only_update', 'audit_log_append_only_delete'):
            op.execute(f'DROP TRIGGER IF EXISTS {name}')
    else:
        for name, table in (('events_append_only', 'events'), ('events_no_truncate', 'events'),
                            ('audit_log_append_only', 'audit_log'),
                            ('audit_log_no_truncate', 'audit_log')):
            op.execute(f'DROP TRIGGER IF EXISTS {name} ON {table}')
        op.execute('DROP FUNCTION IF EXISTS notify_events_append_only()')
        op.execute('DROP FUNCTION IF EXISTS notify_refuse_rewrite()')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_replay_key')
        batch_op.drop_column('replay_key')
        for column, parent in (('campaign_id', 'campaigns'), ('message_id', 'messages'),
                               ('contact_id', 'contacts')):
            batch_op.create_foreign_key(f'fk_events_{column}', parent, [column], ['id'],
                                        ondelete='CASCADE')
    with op.batch_alter_table('password_resets', schema=None) as batch_op:
        batch_op.drop_column('completion_received_at')
