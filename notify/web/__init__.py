"""The web view served by `notify serve` at ``/``: support search, campaign progress,
compliance downloads and audit log, user management (see docs/web.md)."""
