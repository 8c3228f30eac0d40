"""matchcore.client: the asyncio client library of the matchcore wire protocol.

The same objects as ``matchcore.gateway.client`` (this package re-exports them), plus the key
helpers a client needs::

    from matchcore.client import Client, load_private_key

See ``docs/protocol.md`` for the protocol and ``matchcore.gateway.client`` for the details.
"""
from matchcore.gateway.auth import PrivateKey, generate_key, load_private_key
from matchcore.gateway.client import Client, ClientError, ConnectionLost, LoginRefused, Outcome

__all__ = ["Client", "ClientError", "ConnectionLost", "LoginRefused", "Outcome", "PrivateKey",
           "generate_key", "load_private_key"]
