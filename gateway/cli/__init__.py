"""The `gateway` command line: serve, demo, keys, users, queue, security, audit, receipts."""
