# cython: language_level=3
"""matchcore.core._core: the one native extension. Its parts are included below; the fields
and cdef methods of its classes are declared in _core.pxd, the C structs of each part in its
own .pxd (records, engine, ring, pipeline), the atomics and checks in atomics.h/.pxd."""
from atomics cimport MC_DEBUG_BUILD
from records cimport *

#: True in the debug build (MATCHCORE_DEBUG=1 at build time): internal invariants are
#: checked after every command of Engine.apply.
DEBUG_BUILD = bool(MC_DEBUG_BUILD)

include "layout.pxi"
include "engine.pxi"
include "ring.pxi"
include "pipeline.pxi"
