"""message tallies by round: first notices and each reminder round counted apart

Revision ID: 0008_tallies_by_round
Revises: 0007_snapshot_template_versions

``notify status`` shows first notices and each reminder round apart, and must stay instant
at a million contacts: it reads counts, never scans messages. The message tallies of 0004
(``message:{channel}:{status}``) are now kept per round:
``message:{channel}:{status}:{notice}:{sequence}`` (``message:email:sent:notice:0``,
``message:email:sent:reminder:1``). The per-channel totals are their sums. A message's notice
and sequence never change (they are its identity in ``uq_messages_once``), so the status
update trigger moves a count within its round, as before, at the same cost: one tally row
per change.

Only the message triggers change (their reach maintenance is as in 0004, written out again
because a trigger is replaced whole); existing counts are recounted once.
"""
from alembic import op

revision = '0008_tallies_by_round'
down_revision = '0007_snapshot_template_versions'
branch_labels = None
depends_on = None

REACHED = "('sent', 'delivered')"
OPEN = "('pending', 'sending')"


def bucket(status: str) -> str:
    """SQL: 2 reached, 1 open, 0 closed."""
    return f"(CASE WHEN {status} IN {REACHED} THEN 2 WHEN {status} IN {OPEN} THEN 1 ELSE 0 END)"


def by_round(row: str) -> str:
    """SQL: the tally name of a message row from this revision on."""
    prefix = f"{row}." if row else ""
    return (f"'message:' || {prefix}channel || ':' || {prefix}status || ':' || {prefix}notice "
            f"|| ':' || {prefix}sequence")


def by_channel(row: str) -> str:
    """SQL: the tally name of a message row in 0004 (for the downgrade)."""
    prefix = f"{row}." if row else ""
    return f"'message:' || {prefix}channel || ':' || {prefix}status"


def _sqlite_add(campaign: str, name: str, delta: str) -> str:
    return (f"INSERT INTO tallies (campaign_id, name, shard, n) VALUES ({campaign}, {name}, 0, "
            f"{delta}) ON CONFLICT (campaign_id, name, shard) DO UPDATE SET n = n + {delta};")


def _sqlite_reach(row: str, sign: str) -> str:
    b = bucket(f"{row}.status")
    return (
        f"INSERT INTO contact_reach (contact_id, campaign_id, reached_n, open_n, closed_n) "
        f"VALUES ({row}.contact_id, {row}.campaign_id, {sign}({b} = 2), {sign}({b} = 1), "
        f"{sign}({b} = 0)) ON CONFLICT (contact_id) DO UPDATE SET "
        f"reached_n = reached_n + excluded.reached_n, open_n = open_n + excluded.open_n, "
        f"closed_n = closed_n + excluded.closed_n;"
    )


_SQLITE_FORGET = ("DELETE FROM contact_reach WHERE contact_id = OLD.contact_id AND reached_n = 0 "
                  "AND open_n = 0 AND closed_n = 0;")


def sqlite_triggers(name) -> list[str]:
    """The three message triggers of SQLite, counting under ``name(row)``."""
    return [
        f"""CREATE TRIGGER tally_messages_insert AFTER INSERT ON messages BEGIN
            {_sqlite_add('NEW.campaign_id', name('NEW'), '1')}
            {_sqlite_reach('NEW', '+')} END""",
        f"""CREATE TRIGGER tally_messages_update AFTER UPDATE OF status ON messages
            WHEN OLD.status IS NOT NEW.status BEGIN
            {_sqlite_add('OLD.campaign_id', name('OLD'), '-1')}
            {_sqlite_add('NEW.campaign_id', name('NEW'), '1')}
            UPDATE contact_reach SET
                reached_n = reached_n + ({bucket('NEW.status')} = 2) - ({bucket('OLD.status')} = 2),
                open_n = open_n + ({bucket('NEW.status')} = 1) - ({bucket('OLD.status')} = 1),
                closed_n = closed_n + ({bucket('NEW.status')} = 0) - ({bucket('OLD.status')} = 0)
            WHERE contact_id = NEW.contact_id AND {bucket('OLD.status')} <> {bucket('NEW.status')};
            END""",
        f"""CREATE TRIGGER tally_messages_delete AFTER DELETE ON messages BEGIN
            {_sqlite_add('OLD.campaign_id', name('OLD'), '-1')}
            UPDATE contact_reach SET
                reached_n = reached_n - ({bucket('OLD.status')} = 2),
                open_n = open_n - ({bucket('OLD.status')} = 1),
                closed_n = closed_n - ({bucket('OLD.status')} = 0)
            WHERE contact_id = OLD.contact_id;
            {_SQLITE_FORGET} END""",
    ]


_PG_ADD = """INSERT INTO tallies AS t (campaign_id, name, shard, n)
    SELECT campaign_id, name, pg_backend_pid(), sum(d) FROM ({rows}) AS x(campaign_id, name, d)
    GROUP BY campaign_id, name
    ON CONFLICT (campaign_id, name, shard) DO UPDATE SET n = t.n + EXCLUDED.n;"""


def _pg_function(name: str, body: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
            f"BEGIN\n{body}\nRETURN NULL;\nEND\n$fn$")


def _pg_reach_delta(source: str) -> str:
    b = bucket("status")
    return f"""INSERT INTO contact_reach AS r (contact_id, campaign_id, reached_n, open_n, closed_n)
    SELECT contact_id, min(campaign_id), count(*) FILTER (WHERE {b} = 2),
        count(*) FILTER (WHERE {b} = 1), count(*) FILTER (WHERE {b} = 0)
    FROM {source} GROUP BY contact_id
    ON CONFLICT (contact_id) DO UPDATE SET reached_n = r.reached_n + EXCLUDED.reached_n,
        open_n = r.open_n + EXCLUDED.open_n, closed_n = r.closed_n + EXCLUDED.closed_n;"""


def postgres_functions(name) -> list[str]:
    """The three message trigger functions of PostgreSQL, counting under ``name(row)``; the
    triggers of 0004 call them by name and stay."""
    return [
        _pg_function("tally_messages_insert", _PG_ADD.format(
            rows=f"SELECT campaign_id, {name('')}, 1 FROM added")
            + "\n" + _pg_reach_delta("added")),
        _pg_function("tally_messages_delete", _PG_ADD.format(
            rows=f"SELECT campaign_id, {name('')}, -1 FROM removed")
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
            rows=f"VALUES (OLD.campaign_id, {name('OLD')}, -1), "
                 f"(NEW.campaign_id, {name('NEW')}, 1)")
            + "\n" + f"""IF {bucket('OLD.status')} <> {bucket('NEW.status')} THEN
    UPDATE contact_reach SET
        reached_n = reached_n + ({bucket('NEW.status')} = 2)::int - ({bucket('OLD.status')} = 2)::int,
        open_n = open_n + ({bucket('NEW.status')} = 1)::int - ({bucket('OLD.status')} = 1)::int,
        closed_n = closed_n + ({bucket('NEW.status')} = 0)::int - ({bucket('OLD.status')} = 0)::int
    WHERE contact_id = NEW.contact_id;
END IF;"""),
    ]


def _switch(name, group_by: str) -> None:
    """Count messages under ``name`` from now on: new triggers, and the counts recounted."""
    if op.get_bind().dialect.name == 'sqlite':
        for trigger in ("tally_messages_insert", "tally_messages_update", "tally_messages_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        statements = sqlite_triggers(name)
    else:
        statements = postgres_functions(name)
    op.execute("DELETE FROM tallies WHERE name LIKE 'message:%'")
    op.execute(f"INSERT INTO tallies (campaign_id, name, shard, n) SELECT campaign_id, "
               f"{name('')}, 0, count(*) FROM messages GROUP BY campaign_id, {group_by}")
    for sql in statements:
        op.execute(sql)


def upgrade() -> None:
    _switch(by_round, "channel, status, notice, sequence")


def downgrade() -> None:
    _switch(by_channel, "channel, status")
