"""`notify users add|list|remove|unlock`: accounts of the web view served by `notify serve`."""

from __future__ import annotations

import sys
from datetime import tzinfo

import click

from notify import audit as audit_log
from notify.cli import main
from notify.cli.common import App, pass_app
from notify.cli.listing import Column, emit, list_options
from notify.errors import NotifyError
from notify.models import WEB_ROLES


@main.group()
def users() -> None:
    """Accounts that may sign in to the web view (support, compliance, admin)."""


@users.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(WEB_ROLES),
    help="support: search and timelines; compliance: also campaigns' exports and "
    "the audit log; admin: also manages users.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of "
    "prompting (for scripts).",
)
@pass_app
def users_add(app: App, name: str, role: str, password_stdin: bool) -> None:
    """Create the web account NAME with a role; the password is prompted (twice).

    The password (12 characters or more) is stored only as its argon2 hash.

    \b
    Example:
      notify users add alice --role admin
      printf '%s\\n' "$PASSWORD" | notify users add bob --role support --password-stdin
    """
    from notify.web import users as accounts

    name = accounts.check_name(name)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.__stdin__ is not None and sys.stdin is sys.__stdin__ and not sys.stdin.isatty():
        # The process has no terminal (a script, cron): getpass would warn that the password
        # may be echoed, then abort on the empty input.
        raise NotifyError(
            "no terminal to ask for the password on: pipe it in with --password-stdin"
        )
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    accounts.check_password(password)
    with app.session() as session:
        accounts.add_user(session, name, role, password)
        audit_log.record(
            session, "users add", arguments={"name": name, "role": role}, actor=app.actor
        )
    click.echo(
        f"Added user {name!r} with role {role}. They sign in at the address "
        "`notify serve` listens on."
    )


USER_COLUMNS = (
    Column("name"),
    Column("role"),
    Column("locked_until", time=True),
    Column("last_login_at", time=True),
    Column("created_at", time=True),
)


@users.command("list")
@list_options
@pass_app
def users_list(app: App, fmt: str, zone: tzinfo) -> None:
    """List the web accounts: name, role, locked until, last sign-in, created.

    \b
    Example:
      notify users list
      notify users list --format csv
    """
    from notify.web import users as accounts

    with app.session() as session:
        rows = [accounts.user_row(user) for user in accounts.list_users(session)]
    emit(
        rows,
        USER_COLUMNS,
        fmt,
        zone,
        empty="No users yet. Create the first admin with: notify users add NAME --role admin",
    )


@users.command("remove")
@click.argument("name")
@pass_app
def users_remove(app: App, name: str) -> None:
    """Delete the web account NAME; its open sessions stop working at once.

    \b
    Example:
      notify users remove bob
    """
    _on_account(app, name, "remove")
    click.echo(f"Removed user {name!r}.")


@users.command("unlock")
@click.argument("name")
@pass_app
def users_unlock(app: App, name: str) -> None:
    """Lift the lock on the web account NAME after too many wrong passwords.

    Clears the failure count and the lock at once, instead of waiting out the quarter of an
    hour; the next wrong passwords count from zero again.

    \b
    Example:
      notify users unlock bob
    """
    _on_account(app, name, "unlock")
    click.echo(f"Unlocked user {name!r}: they can sign in again.")


def _on_account(app: App, name: str, action: str) -> None:
    """Remove or unlock the account ``name`` and record it (``users remove`` / ``users
    unlock``, with the account's role) in the same transaction."""
    from notify.web import users as accounts

    change = {"remove": accounts.remove_user, "unlock": accounts.unlock_user}[action]
    with app.session() as session:
        user = change(session, name)
        audit_log.record(
            session, f"users {action}", arguments={"name": name, "role": user.role}, actor=app.actor
        )
