"""`notify demo`: the whole main job on the built-in examples, in a fresh folder.

It uses the embedded defaults only (a SQLite file and the outbox folder inside the demo
folder), whatever NOTIFY_* variables are set, so a demo can never reach a real customer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from notify import audit, campaigns, db, export, importer
from notify.config import Settings
from notify.errors import NotifyError
from notify.files import private_dir
from notify.models import Contact, PasswordReset, utcnow
from notify.resets import completions
from notify.resources import data_dir
from notify.send.options import SendObserver, SendOptions
from notify.send.runner import send_campaign
from notify.status import campaign_status, format_status

Echo = Callable[[str], None]


def demo_folder(folder: str | Path | None) -> Path:
    """A fresh folder for the demo: the one given (must be empty or new), else a temp dir."""
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="notify-demo-"))
    path = Path(folder)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise NotifyError(f"{path}: the demo needs an empty or new folder")
    return private_dir(path)


def run_demo(
    folder: Path, echo: Echo, actor: str | None = None, observer: SendObserver | None = None
) -> dict[str, Path]:
    """Load the example campaign, import the example list, send, report, export.

    ``observer`` shows the send's progress (the CLI's display; None: nothing).

    Returns the paths it wrote (database, outbox, rejects, deliveries).
    """
    settings = Settings(
        database_url=f"sqlite:///{folder / 'notify.db'}", outbox=folder / "outbox", use_outbox=True
    )
    engine = db.connect(settings.database_url)
    paths = {
        "database": folder / "notify.db",
        "outbox": folder / "outbox",
        "rejects": folder / "rejects.csv",
        "deliveries": folder / "deliveries.csv",
    }
    echo(
        f"notify demo in {folder} (embedded SQLite database and outbox; nothing leaves "
        "this machine)\n"
    )
    name = _load_campaign(engine, echo, actor)
    _import(engine, name, paths["rejects"], echo, actor)
    _send(engine, settings, name, echo, actor, observer)
    _complete_one_reset(engine, name, echo, actor)
    _status(engine, name, echo)
    _export(engine, name, paths["deliveries"], echo, actor)
    echo("\nLook around:")
    echo(f"  emails:     {paths['outbox'] / 'email'}")
    echo(f"  SMS:        {paths['outbox'] / 'sms.jsonl'}")
    echo(f"  database:   notify --db {paths['database']} lookup C-1001")
    return paths


def _load_campaign(engine, echo: Echo, actor: str | None) -> str:
    source = data_dir("campaigns") / "example.toml"
    with db.session_scope(engine) as session:
        campaign, _ = campaigns.load_campaign(session, source)
        audit.record(
            session,
            "campaign load",
            campaign=campaign.name,
            arguments={"file": str(source), "demo": True},
            actor=actor,
        )
        config = campaigns.config_of(campaign)
    echo(
        f"1. Loaded campaign {config.name!r} ({config.organization}): "
        f"channels {', '.join(config.channels)}, fallback {config.fallback}."
    )
    return config.name


def _import(engine, name: str, rejects: Path, echo: Echo, actor: str | None) -> None:
    source = data_dir("contacts") / "example.csv"
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, name)
        summary = importer.import_contacts(session, campaign, source, rejects_path=rejects)
        audit.record(
            session,
            "contacts import",
            campaign=name,
            actor=actor,
            arguments={"file": str(source), "demo": True},
            counts=summary.counts(),
        )
    counts = summary.counts()
    echo(f"2. Imported {source.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for problem in summary.rejects:
        echo(f"   rejected line {problem.line}: {problem.reason}")
    for problem in summary.warned:
        echo(f"   warning  line {problem.line}: {problem.reason}")
    echo(f"   (rejected rows with their data: {rejects})")


def _send(
    engine,
    settings: Settings,
    name: str,
    echo: Echo,
    actor: str | None,
    observer: SendObserver | None = None,
) -> None:
    # The outbox has no provider quota: lift the campaign's real-world rates for the demo.
    options = SendOptions(
        email_rate=0, sms_rate=0, assume_yes=True, progress=True, observer=observer
    )
    summary = send_campaign(engine, settings, name, options)
    with db.session_scope(engine) as session:
        audit.record(
            session,
            "send",
            campaign=name,
            actor=actor,
            arguments={"demo": True},
            counts=summary.as_dict()["run"],
        )
    echo("3. " + summary.lines()[0])
    for line in summary.lines()[1:]:
        echo("   " + line.strip())


def _complete_one_reset(engine, name: str, echo: Echo, actor: str | None) -> None:
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, name)
        key = session.scalar(
            select(Contact.key)
            .join(PasswordReset, PasswordReset.contact_id == Contact.id)
            .where(PasswordReset.campaign_id == campaign.id)
            .order_by(Contact.id)
            .limit(1)
        )
        if key is None:
            return
        result = completions.complete(
            session, campaign, key=key, completed_at=utcnow(), source="demo"
        )
        audit.record(
            session,
            "resets complete",
            campaign=name,
            actor=actor,
            arguments={"key": key, "demo": True},
            counts={"completed": 1},
        )
    echo(f"4. The identity provider reports that {key} reset their password: {result.message}.")


def _status(engine, name: str, echo: Echo) -> None:
    with db.session_scope(engine) as session:
        report = campaign_status(session, name)
    echo("5. Status:")
    for line in format_status(report):
        echo("   " + line)


def _export(engine, name: str, path: Path, echo: Echo, actor: str | None) -> None:
    rows = export.export_deliveries(engine, name, path)
    with db.session_scope(engine) as session:
        audit.record(
            session,
            "export deliveries",
            campaign=name,
            actor=actor,
            arguments={"output": str(path), "demo": True},
            counts={"rows": rows},
        )
    echo(f"6. Wrote the compliance record: {path} ({rows} messages)")
