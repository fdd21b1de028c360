"""What the import tests share: the loaded example campaign and a one-call import."""

from __future__ import annotations

from sqlalchemy import select

from notify import campaigns, db, importer
from notify.models import Contact

CAMPAIGN = "acme-2026-11"


def do_import(engine, path, **options) -> importer.ImportSummary:
    """Import ``path`` into the example campaign in one transaction."""
    with db.session_scope(engine) as session:
        campaign = campaigns.get_campaign(session, CAMPAIGN)
        return importer.import_contacts(session, campaign, path, **options)


def stored(engine) -> dict[str, Contact]:
    """Every stored contact by key."""
    with db.session_scope(engine) as session:
        return {c.key: c for c in session.scalars(select(Contact))}
