"""channels layer of pyserver (see design.md)."""
