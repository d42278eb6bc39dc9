"""api layer of pyserver (see design.md)."""
