"""Channel history: the stores that keep recent events per channel, and the HTTP API on them."""
