"""The live debug console: a web page served by pyserver at `/console` (see `console.py`)."""
