"""matchcore.gateway: the server, one module per stage (docs/architecture.md draws the path).

- ``sessions``: connections, per-session limits, the asyncio adapter.
- ``admission``: the one door into the core's input ring, with backpressure.
- ``durable_core``: the core thread and the journal writer, recovered at start.
- ``dispatch`` and ``streams``: durable events to the sessions they belong to, replay.
- ``replica``: the replica engine: ORDER_STATUS, queries and market data from released state only.
- ``market_data``: market data subscriptions and fan-out (conflation), query routing.
- ``queries``: the answers, made in the replica thread.
- ``keys`` and ``key_store``: the login check and the public keys in PostgreSQL;
  ``login_throttle``: failed logins per source address; ``key_watch``: revoked keys and
  old sessions logged out.
- ``checkpoints``, ``config``, ``metrics``, ``logs``; ``app``: all of it wired together.
"""
