"""maintained counts for `notify status`: tallies and contact_reach, kept by triggers

Revision ID: 0004
Revises: 0003

``notify status`` must answer at once at a million contacts, so it reads counts instead of
scanning. Triggers keep them, in the same transaction as every change, whatever code or SQL
makes the change (the send engine, tracking, bounces, fallback, reminders, a hand-run DELETE).

* ``tallies(campaign_id, name, shard, n)``: ``contacts``; ``message:{channel}:{status}``;
  ``reach:{class}`` for contacts that have messages; ``reset:{status}``.
* ``contact_reach(contact_id, ...)``: per contact, its messages by bucket: reached (sent,
  delivered), open (pending, sending), closed (the other finals). Its class is ``reached`` if
  any reached, else ``pending`` if any open, else ``not_reached``.

SQLite has row triggers only; it has one writer, so they update single rows (shard 0).
PostgreSQL adds into the shard of its backend pid, so concurrent workers never queue on a hot
tally row, and uses statement triggers with transition tables for bulk INSERT and DELETE (the
plan of a million messages, COPY of a million contacts) so they cost one aggregate, not a
million row updates. Updates of a message's status are row triggers restricted to the status
column, so lease renewals and other updates cost nothing.

The statuses below are the set of notify.models at this revision, written out on purpose: a
migration must not change when the application code does.
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

REACHED = "('sent', 'delivered')"
OPEN = "('pending', 'sending')"


def bucket(status: str) -> str:
    """SQL: 2 reached, 1 open, 0 closed."""
    return f"(CASE WHEN {status} IN {REACHED} THEN 2 WHEN {status} IN {OPEN} THEN 1 ELSE 0 END)"


def klass(row: str) -> str:
    """SQL: the reach class of a contact_reach row."""
    return (f"(CASE WHEN {row}.reached_n > 0 THEN 'reach:reached' WHEN {row}.open_n > 0 "
            f"THEN 'reach:pending' ELSE 'reach:not_reached' END)")


def upgrade() -> None:
    op.create_table(
        'tallies',
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('shard', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('n', sa.BigInteger(), nullable=False, server_default='0'),
        sa.PrimaryKeyConstraint('campaign_id', 'name', 'shard', name='pk_tallies'),
    )
    op.create_table(
        'contact_reach',
        sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('reached_n', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('open_n', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('closed_n', sa.Integer(), nullable=False, server_default='0'),
        sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ondelete='CASCADE',
                                name='fk_contact_reach_contact'),
        sa.PrimaryKeyConstraint('contact_id', name='pk_contact_reach'),
    )
    backfill()
    statements = SQLITE if op.get_bind().dialect.name == 'sqlite' else POSTGRES
    for sql in statements:
        op.execute(sql)


def backfill() -> None:
    """Counts of what is already stored, before the triggers take over."""
    for sql in (
        "INSERT INTO tallies (campaign_id, name, shard, n) SELECT campaign_id, 'contacts', 0, "
        "count(*) FROM contacts GROUP BY campaign_id",
        "INSERT INTO tallies (campaign_id, name, shard, n) SELECT campaign_id, "
        "'message:' || channel || ':' || status, 0, count(*) FROM messages "
        "GROUP BY campaign_id, channel, status",
        "INSERT INTO tallies (campaign_id, name, shard, n) SELECT campaign_id, "
        "'reset:' || status, 0, count(*) FROM password_resets GROUP BY campaign_id, status",
        f"INSERT INTO contact_reach (contact_id, campaign_id, reached_n, open_n, closed_n) "
        f"SELECT contact_id, min(campaign_id), "
        f"sum(CASE WHEN {bucket('status')} = 2 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN {bucket('status')} = 1 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN {bucket('status')} = 0 THEN 1 ELSE 0 END) "
        f"FROM messages GROUP BY contact_id",
        f"INSERT INTO tallies (campaign_id, name, shard, n) SELECT campaign_id, {klass('r')}, "
        f"0, count(*) FROM contact_reach r GROUP BY campaign_id, {klass('r')}",
    ):
        op.execute(sql)


def _sqlite_add(campaign: str, name: str, delta: str) -> str:
    return (f"INSERT INTO tallies (campaign_id, name, shard, n) VALUES ({campaign}, {name}, 0, "
            f"{delta}) ON CONFLICT (campaign_id, name, shard) DO UPDATE SET n = n + {delta};")


def _sqlite_reach(row: str, sign: str) -> str:
    """contact_reach change for message ``row`` (NEW or OLD) entering (+) or leaving (-)."""
    b = bucket(f"{row}.status")
    return (
        f"INSERT INTO contact_reach (contact_id, campaign_id, reached_n, open_n, closed_n) "
        f"VALUES ({row}.contact_id, {row}.campaign_id, {sign}({b} = 2), {sign}({b} = 1), "
        f"{sign}({b} = 0)) ON CONFLICT (contact_id) DO UPDATE SET "
        f"reached_n = reached_n + excluded.reached_n, open_n = open_n + excluded.open_n, "
        f"closed_n = closed_n + excluded.closed_n;"
    )


# A contact whose messages are all deleted is again one with no message: forget its row.
_SQLITE_FORGET = ("DELETE FROM contact_reach WHERE contact_id = OLD.contact_id AND reached_n = 0 "
                  "AND open_n = 0 AND closed_n = 0;")


def _message_name(row: str) -> str:
    return f"'message:' || {row}.channel || ':' || {row}.status"


SQLITE = [
    f"""CREATE TRIGGER tally_contacts_insert AFTER INSERT ON contacts BEGIN
        {_sqlite_add('NEW.campaign_id', "'contacts'", '1')} END""",
    f"""CREATE TRIGGER tally_contacts_delete AFTER DELETE ON contacts BEGIN
        {_sqlite_add('OLD.campaign_id', "'contacts'", '-1')} END""",
    f"""CREATE TRIGGER tally_messages_insert AFTER INSERT ON messages BEGIN
        {_sqlite_add('NEW.campaign_id', _message_name('NEW'), '1')}
        {_sqlite_reach('NEW', '+')} END""",
    f"""CREATE TRIGGER tally_messages_update AFTER UPDATE OF status ON messages
        WHEN OLD.status IS NOT NEW.status BEGIN
        {_sqlite_add('OLD.campaign_id', _message_name('OLD'), '-1')}
        {_sqlite_add('NEW.campaign_id', _message_name('NEW'), '1')}
        UPDATE contact_reach SET
            reached_n = reached_n + ({bucket('NEW.status')} = 2) - ({bucket('OLD.status')} = 2),
            open_n = open_n + ({bucket('NEW.status')} = 1) - ({bucket('OLD.status')} = 1),
            closed_n = closed_n + ({bucket('NEW.status')} = 0) - ({bucket('OLD.status')} = 0)
        WHERE contact_id = NEW.contact_id AND {bucket('OLD.status')} <> {bucket('NEW.status')};
        END""",
    f"""CREATE TRIGGER tally_messages_delete AFTER DELETE ON messages BEGIN
        {_sqlite_add('OLD.campaign_id', _message_name('OLD'), '-1')}
        UPDATE contact_reach SET
            reached_n = reached_n - ({bucket('OLD.status')} = 2),
            open_n = open_n - ({bucket('OLD.status')} = 1),
            closed_n = closed_n - ({bucket('OLD.status')} = 0)
        WHERE contact_id = OLD.contact_id;
        {_SQLITE_FORGET} END""",
    f"""CREATE TRIGGER tally_reach_insert AFTER INSERT ON contact_reach BEGIN
        {_sqlite_add('NEW.campaign_id', klass('NEW'), '1')} END""",
    f"""CREATE TRIGGER tally_reach_update AFTER UPDATE ON contact_reach
        WHEN {klass('OLD')} <> {klass('NEW')} BEGIN
        {_sqlite_add('OLD.campaign_id', klass('OLD'), '-1')}
        {_sqlite_add('NEW.campaign_id', klass('NEW'), '1')} END""",
    f"""CREATE TRIGGER tally_reach_delete AFTER DELETE ON contact_reach BEGIN
        {_sqlite_add('OLD.campaign_id', klass('OLD'), '-1')} END""",
    f"""CREATE TRIGGER tally_resets_insert AFTER INSERT ON password_resets BEGIN
        {_sqlite_add('NEW.campaign_id', "'reset:' || NEW.status", '1')} END""",
    f"""CREATE TRIGGER tally_resets_update AFTER UPDATE OF status ON password_resets
        WHEN OLD.status IS NOT NEW.status BEGIN
        {_sqlite_add('OLD.campaign_id', "'reset:' || OLD.status", '-1')}
        {_sqlite_add('NEW.campaign_id', "'reset:' || NEW.status", '1')} END""",
    f"""CREATE TRIGGER tally_resets_delete AFTER DELETE ON password_resets BEGIN
        {_sqlite_add('OLD.campaign_id', "'reset:' || OLD.status", '-1')} END""",
]

# PostgreSQL: set-based adds into this backend's shard.
_PG_ADD = """INSERT INTO tallies AS t (campaign_id, name, shard, n)
    SELECT campaign_id, name, pg_backend_pid(), sum(d) FROM ({rows}) AS x(campaign_id, name, d)
    GROUP BY campaign_id, name
    ON CONFLICT (campaign_id, name, shard) DO UPDATE SET n = t.n + EXCLUDED.n;"""


def _pg_function(name: str, body: str) -> str:
    return (f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
            f"BEGIN\n{body}\nRETURN NULL;\nEND\n$fn$")


def _pg_reach_delta(source: str) -> str:
    """contact_reach += the buckets of the message rows in ``source``."""
    b = bucket("status")
    return f"""INSERT INTO contact_reach AS r (contact_id, campaign_id, reached_n, open_n, closed_n)
    SELECT contact_id, min(campaign_id), count(*) FILTER (WHERE {b} = 2),
        count(*) FILTER (WHERE {b} = 1), count(*) FILTER (WHERE {b} = 0)
    FROM {source} GROUP BY contact_id
    ON CONFLICT (contact_id) DO UPDATE SET reached_n = r.reached_n + EXCLUDED.reached_n,
        open_n = r.open_n + EXCLUDED.open_n, closed_n = r.closed_n + EXCLUDED.closed_n;"""


POSTGRES = [
    _pg_function("tally_contacts_insert", _PG_ADD.format(
        rows="SELECT campaign_id, 'contacts', 1 FROM added")),
    _pg_function("tally_contacts_delete", _PG_ADD.format(
        rows="SELECT campaign_id, 'contacts', -1 FROM removed")),
    _pg_function("tally_messages_insert", _PG_ADD.format(
        rows="SELECT campaign_id, 'message:' || channel || ':' || status, 1 FROM added")
        + "\n" + _pg_reach_delta("added")),
    _pg_function("tally_messages_delete", _PG_ADD.format(
        rows="SELECT campaign_id, 'message:' || channel || ':' || status, -1 FROM removed")
        + "\n" + f"""UPDATE contact_reach r SET reached_n = r.reached_n - x.reached,
        open_n = r.open_n - x.open, closed_n = r.closed_n - x.closed
    FROM (SELECT contact_id, count(*) FILTER (WHERE {bucket('status')} = 2) AS reached,
        count(*) FILTER (WHERE {bucket('status')} = 1) AS open,
        count(*) FILTER (WHERE {bucket('status')} = 0) AS closed
        FROM removed GROUP BY contact_id) AS x
    WHERE r.contact_id = x.contact_id;
DELETE FROM contact_reach r USING (SELECT DISTINCT contact_id FROM removed) AS x
    WHERE r.contact_id = x.contact_id AND r.reached_n = 0 AND r.open_n = 0 AND r.closed_n = 0;"""),
    _pg_function("tally_messages_update", _PG_ADD.format(
        rows="VALUES (OLD.campaign_id, 'message:' || OLD.channel || ':' || OLD.status, -1), "
             "(NEW.campaign_id, 'message:' || NEW.channel || ':' || NEW.status, 1)")
        + "\n" + f"""IF {bucket('OLD.status')} <> {bucket('NEW.status')} THEN
    UPDATE contact_reach SET
        reached_n = reached_n + ({bucket('NEW.status')} = 2)::int - ({bucket('OLD.status')} = 2)::int,
        open_n = open_n + ({bucket('NEW.status')} = 1)::int - ({bucket('OLD.status')} = 1)::int,
        closed_n = closed_n + ({bucket('NEW.status')} = 0)::int - ({bucket('OLD.status')} = 0)::int
    WHERE contact_id = NEW.contact_id;
END IF;"""),
    _pg_function("tally_reach_insert", _PG_ADD.format(
        rows=f"SELECT campaign_id, {klass('added')}, 1 FROM added")),
    _pg_function("tally_reach_update", _PG_ADD.format(
        rows=f"SELECT o.campaign_id, {klass('o')}, -1 FROM before o JOIN after a "
             f"USING (contact_id) WHERE {klass('o')} <> {klass('a')} UNION ALL "
             f"SELECT a.campaign_id, {klass('a')}, 1 FROM before o JOIN after a "
             f"USING (contact_id) WHERE {klass('o')} <> {klass('a')}")),
    _pg_function("tally_reach_delete", _PG_ADD.format(
        rows=f"SELECT campaign_id, {klass('removed')}, -1 FROM removed")),
    _pg_function("tally_resets_insert", _PG_ADD.format(
        rows="SELECT campaign_id, 'reset:' || status, 1 FROM added")),
    _pg_function("tally_resets_delete", _PG_ADD.format(
        rows="SELECT campaign_id, 'reset:' || status, -1 FROM removed")),
    _pg_function("tally_resets_update", _PG_ADD.format(
        rows="VALUES (OLD.campaign_id, 'reset:' || OLD.status, -1), "
             "(NEW.campaign_id, 'reset:' || NEW.status, 1)")),
    "CREATE TRIGGER tally_contacts_insert AFTER INSERT ON contacts REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_contacts_insert()",
    "CREATE TRIGGER tally_contacts_delete AFTER DELETE ON contacts REFERENCING OLD TABLE AS removed "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_contacts_delete()",
    "CREATE TRIGGER tally_messages_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_messages_insert()",
    "CREATE TRIGGER tally_messages_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS removed "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_messages_delete()",
    "CREATE TRIGGER tally_messages_update AFTER UPDATE OF status ON messages FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tally_messages_update()",
    "CREATE TRIGGER tally_reach_insert AFTER INSERT ON contact_reach REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_reach_insert()",
    "CREATE TRIGGER tally_reach_update AFTER UPDATE ON contact_reach REFERENCING OLD TABLE AS before "
    "NEW TABLE AS after FOR EACH STATEMENT EXECUTE FUNCTION tally_reach_update()",
    "CREATE TRIGGER tally_reach_delete AFTER DELETE ON contact_reach REFERENCING OLD TABLE AS removed "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_reach_delete()",
    "CREATE TRIGGER tally_resets_insert AFTER INSERT ON password_resets REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_resets_insert()",
    "CREATE TRIGGER tally_resets_delete AFTER DELETE ON password_resets REFERENCING OLD TABLE AS "
    "removed FOR EACH STATEMENT EXECUTE FUNCTION tally_resets_delete()",
    "CREATE TRIGGER tally_resets_update AFTER UPDATE OF status ON password_resets FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tally_resets_update()",
]

_TRIGGERS = [
    ("contacts", "tally_contacts_insert"), ("contacts", "tally_contacts_delete"),
    ("messages", "tally_messages_insert"), ("messages", "tally_messages_update"),
    ("messages", "tally_messages_delete"), ("contact_reach", "tally_reach_insert"),
    ("contact_reach", "tally_reach_update"), ("contact_reach", "tally_reach_delete"),
    ("password_resets", "tally_resets_insert"), ("password_resets", "tally_resets_update"),
    ("password_resets", "tally_resets_delete"),
]


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, name in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else f" ON {table}"))
        if not sqlite:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table('contact_reach')
    op.drop_table('tallies')
