# cython: language_level=3
"""Placeholder; the engine lands next."""
from records cimport Command, Event

cdef extern from "stddef.h":
    size_t offsetof(...)

def layout():
    return {"command_size": sizeof(Command), "event_size": sizeof(Event)}
