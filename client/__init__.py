"""matchcore.client: the asyncio client library of the matchcore wire protocol.

Everything a trading client or bot needs, and nothing of the server: importing it does not
load any server module (a test checks ``sys.modules``)::

    from matchcore.client import Client, load_private_key

- ``connection``: ``Client``, one logged-in session (orders, cancels, events, recovery).
- ``keys``: ``PrivateKey``, key files, and the signed LOGIN.
- ``marketdata``: ``Book`` (a local L2 book kept from the feed) and the typed query results
  (``Balance``, ``OpenOrder``, ``Instrument``, ``TransferOutcome``, ``Trade``).

See ``docs/protocol.md`` for the protocol.
"""
from matchcore.client.connection import (Client, ClientError, ConnectionLost, LoginRefused, Outcome, PlaintextWarning,
                                         QueryRefused)
from matchcore.client.marketdata import Balance, Book, Instrument, OpenOrder, Trade, TransferOutcome
from matchcore.client.keys import PrivateKey, generate_key, load_private_key

__all__ = ["Client", "ClientError", "ConnectionLost", "LoginRefused", "Outcome", "PlaintextWarning", "PrivateKey",
           "generate_key", "load_private_key", "QueryRefused", "Balance", "Book", "Instrument", "OpenOrder", "Trade",
           "TransferOutcome"]
