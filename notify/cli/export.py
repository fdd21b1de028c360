"""Commands of this area (see the module's owner issue)."""
