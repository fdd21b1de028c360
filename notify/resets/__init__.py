"""Forced password resets: ``state`` (the one reset-status rule), ``tokens`` (records and
link tokens), ``completions`` (by token, key or email; webhook and CSV) and ``reminders``.

The webhook's HTTP handling lives with the server (``notify.server``), the resets CSV export
with the other exports (``notify.export``).
"""
