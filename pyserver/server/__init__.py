"""server layer of pyserver (see design.md)."""
