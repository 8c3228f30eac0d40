# cython: language_level=3
"""CRC-32C for the journal's rows: ``crc32c(data, value=0)``, continued like ``zlib.crc32``.

The C is in ``crc32c.h``: the SSE4.2 crc32 instruction on three streams where the CPU has it
(``HARDWARE`` is then True), slice-by-8 tables elsewhere; both give the same values.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint32_t


cdef extern from "crc32c.h" nogil:
    void mc_crc32c_init()
    uint32_t mc_crc32c(uint32_t crc, const uint8_t* data, size_t n)
    uint32_t mc_crc32c_software(uint32_t crc, const uint8_t* data, size_t n)
    int mc_crc32c_hardware


mc_crc32c_init()

#: True when the CPU's crc32 instruction is used.
HARDWARE = bool(mc_crc32c_hardware)

# Below this many bytes the GIL is kept: releasing it costs more than the CRC.
DEF _RELEASE_GIL_BYTES = 65536


def crc32c(data, uint32_t value=0) -> int:
    """The CRC-32C of ``data`` (any C-contiguous buffer: bytes, memoryview, numpy array),
    continuing ``value``."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len < _RELEASE_GIL_BYTES:
            value = mc_crc32c(value, <const uint8_t*>view.buf, <size_t>view.len)
        else:
            with nogil:
                value = mc_crc32c(value, <const uint8_t*>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return value


def crc32c_software(data, uint32_t value=0) -> int:
    """The same CRC by the portable table code (for tests and for comparison)."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            value = mc_crc32c_software(value, <const uint8_t*>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return value
