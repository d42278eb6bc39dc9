"""The HTTP API (`spec/protocol.md` §11): its route table and handlers (`routes`) and the
trigger validation it shares with the console (`triggers`). Floor 5: it never imports the
server, which builds it."""
