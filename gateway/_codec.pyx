# cython: language_level=3
"""matchcore.gateway._codec: binary frame decoding into command records (being written)."""
from records cimport Command, Event
