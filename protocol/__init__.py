"""matchcore.protocol: the wire format, shared by the server and the client; owned by neither.

- ``messages``: message types, fixed-width layouts, enums and the pure-Python frame codec
  (the source of truth that ``docs/protocol.md`` is checked against).
- ``_codec``: the Cython codec of the hot path (order entry in, events out).
- ``spec``: the executable specification of ``_codec`` in plain Python, for the tests.
- ``doc``: the generator of the layout and enum tables of ``docs/protocol.md``.

The package namespace re-exports ``messages``, so ``from matchcore import protocol as p``
then ``p.NewOrder(...)`` reads as the protocol document does. It imports only
``matchcore.core``'s records and codes.
"""
from matchcore.protocol.messages import *  # noqa: F403 - the package is the messages' namespace
from matchcore.protocol.messages import __all__  # noqa: F401
