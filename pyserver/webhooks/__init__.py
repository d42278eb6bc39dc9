"""webhooks layer of pyserver (see design.md)."""
