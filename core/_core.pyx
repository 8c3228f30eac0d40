# cython: language_level=3
"""matchcore.core._core: the one native extension. Its parts are included below, each with
its declarations in a .pxd (the uvloop layout): records, layout facts, engine, ring."""
from records cimport *

include "layout.pxi"
include "engine.pxi"
include "ring.pxi"
include "pipeline.pxi"
