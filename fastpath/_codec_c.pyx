"""Compiled twin of `fastpath._codec_py`: same public names, same results, less time.

Import `fastpath.codec`, never this module directly. `_codec_py.py` is the reference:
tests/fastpath checks that both twins agree on generated inputs.
"""

from cpython.long cimport (
    PyLong_AsUnsignedLongLong,
    PyLong_AsUnsignedLongLongMask,
    PyLong_FromUnsignedLongLong,
)
from cpython.object cimport PyObject_GenericSetAttr
from cpython.unicode cimport (
    PyUnicode_1BYTE_DATA,
    PyUnicode_DecodeUTF8,
    PyUnicode_GET_LENGTH,
    PyUnicode_New,
)
from libc.stdint cimport uint8_t, uint64_t

from json import loads as _json_loads
from uuid import UUID, SafeUUID


cdef extern from "Python.h":
    int Py_EnterRecursiveCall(const char *where) except -1
    void Py_LeaveRecursiveCall()


__all__ = [
    "ACCOUNT_COLUMNS",
    "account_to_dict",
    "control_char_fields",
    "decode_cursor",
    "encode_cursor",
    "has_control_char",
    "repeated_key",
]

# Kept as a literal rather than imported from the pure twin, so that loading this module
# never loads that one; a test checks that the two tuples are equal.
ACCOUNT_COLUMNS = (
    "id",
    "name",
    "currency",
    "status",
    "overdraft_limit",
    "posted",
    "pending_debits",
    "pending_credits",
    "holder",
    "metadata",
    "version",
    "created_at",
    "updated_at",
)

cdef enum:
    _NCOLUMNS = 13
    _CURSOR_LENGTH = 22
    _UUID_STR_LENGTH = 36
    _INVALID = 0xFF

cdef const char *_HEX_DIGITS = b"0123456789abcdef"
cdef const char *_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
cdef uint8_t _B64_VALUES[128]
cdef object _SAFE_UNKNOWN = SafeUUID.unknown


cdef void _init_b64_values() noexcept:
    cdef int i
    for i in range(128):
        _B64_VALUES[i] = _INVALID
    for i in range(64):
        _B64_VALUES[<uint8_t>_B64_ALPHABET[i]] = i


_init_b64_values()


cdef bint _uuid_has_plain_slots():
    # uuid.UUID.__init__ costs ~0.5 us, most of a decode_cursor call. CPython's own
    # UUID._from_int (3.14) skips it by setting the two slots on a bare instance; do the
    # same, but only while UUID still has exactly that layout and no __new__ of its own.
    slots = set(getattr(UUID, "__slots__", ())) - {"__weakref__"}
    return slots == {"int", "is_safe"} and "__new__" not in vars(UUID)


cdef bint _FAST_UUID = _uuid_has_plain_slots()


# ---------------------------------------------------------------------------------------
# Accounts


def account_to_dict(row, show_holder):
    """Build the API representation of an account from a row of `ACCOUNT_COLUMNS`.

    The balance is derived from the stored counters: pending = pending_credits -
    pending_debits, available = posted - pending_debits. Datetimes stay datetime objects
    for msgspec to encode.
    The holder is only included when `show_holder` is true (otherwise None).
    Raises ValueError when the row does not have one value per column.
    """
    cdef Py_ssize_t n = len(row)
    if n != _NCOLUMNS:
        raise ValueError(f"account row has {n} values, expected {_NCOLUMNS}")
    # Tuple subclasses (named-tuple rows) index like tuples; anything else is copied once.
    cdef tuple r = <tuple>row if isinstance(row, tuple) else tuple(row)
    # Counters are Python ints of any size: object arithmetic, never C long long.
    posted = r[5]
    pending_debits = r[6]
    return {
        "id": _uuid_str(r[0]),
        "name": r[1],
        "currency": r[2],
        "status": r[3],
        "overdraft_limit": r[4],
        "balance": {
            "posted": posted,
            "pending": r[7] - pending_debits,
            "available": posted - pending_debits,
        },
        "holder": r[8] if show_holder else None,
        "metadata": r[9],
        "version": r[10],
        "created_at": r[11],
        "updated_at": r[12],
    }


cdef object _uuid_str(value):
    # UUID.__str__ is Python code ('%032x' formatting plus slicing); format the two
    # 64-bit halves straight into a new ASCII string instead. Subclasses may override
    # __str__, so only the exact type takes this path.
    if type(value) is not UUID:
        return str(value)
    cdef uint64_t hi, lo
    _uuid_halves(value, &hi, &lo)
    cdef str text = PyUnicode_New(_UUID_STR_LENGTH, 127)
    cdef uint8_t *out = PyUnicode_1BYTE_DATA(text)
    _put_hex(out, hi >> 32, 8)
    out[8] = ord("-")
    _put_hex(out + 9, (hi >> 16) & 0xFFFF, 4)
    out[13] = ord("-")
    _put_hex(out + 14, hi & 0xFFFF, 4)
    out[18] = ord("-")
    _put_hex(out + 19, lo >> 48, 4)
    out[23] = ord("-")
    _put_hex(out + 24, lo & 0xFFFFFFFFFFFF, 12)
    return text


cdef inline void _put_hex(uint8_t *out, uint64_t value, int digits) noexcept:
    cdef int i
    for i in range(digits - 1, -1, -1):
        out[i] = _HEX_DIGITS[value & 0xF]
        value >>= 4


cdef int _uuid_halves(value, uint64_t *hi, uint64_t *lo) except -1:
    number = value.int
    hi[0] = PyLong_AsUnsignedLongLong(number >> 64)
    lo[0] = PyLong_AsUnsignedLongLongMask(number)
    return 0


# ---------------------------------------------------------------------------------------
# Control characters


cdef inline bint _is_control(Py_UCS4 ch) noexcept nogil:
    return ch < 0x20 or 0x7F <= ch <= 0x9F


cdef bint _has_control(str s) except -1:
    cdef Py_UCS4 ch
    for ch in s:
        if _is_control(ch):
            return True
    return False


def has_control_char(s):
    """Whether `s` contains a C0 control (U+0000-U+001F), DEL (U+007F) or a C1 control."""
    if not isinstance(s, str):
        raise TypeError(f"expected a str, not {type(s).__name__}")
    return _has_control(<str>s)


def control_char_fields(obj, prefix=""):
    """Paths of every string in a decoded JSON value that holds a control character.

    Dict keys are checked as well (a bad key reports its own path). Keys are joined with
    "." after `prefix` and list items appended as "[i]", e.g. "transfers[3].description".
    Paths come in document order, each at most once; numbers, booleans and None are ignored.
    """
    # A dict keeps first-seen order and drops repeats: a bad key with a bad string value,
    # or keys such as "a.b" and "a" -> "b", name the same path twice.
    cdef dict found = {}
    _walk(obj, prefix, found)
    return list(found)


cdef int _walk(obj, path, dict found) except -1:
    if isinstance(obj, str):
        if _has_control(<str>obj):
            found[path] = None
        return 0
    if not isinstance(obj, (dict, list)):
        return 0
    # cdef recursion has no interpreter frame, so without this a deeply nested body
    # would overflow the C stack instead of raising RecursionError like the pure twin.
    Py_EnterRecursiveCall(" while looking for control characters")
    try:
        if isinstance(obj, dict):
            _walk_dict(<dict>obj, path, found)
        else:
            _walk_list(<list>obj, path, found)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _walk_dict(dict obj, path, dict found) except -1:
    # Paths are built only when needed (a hit, or a container to descend into): most
    # values are clean scalars or strings, and the concatenation would cost more than
    # the scan.
    for key, value in obj.items():
        if isinstance(key, str):
            name = key
            if _has_control(<str>key):
                found[_join(path, name)] = None
        else:
            name = str(key)
        if isinstance(value, str):
            if _has_control(<str>value):
                found[_join(path, name)] = None
        elif isinstance(value, (dict, list)):
            _walk(value, _join(path, name), found)
    return 0


cdef int _walk_list(list obj, path, dict found) except -1:
    cdef Py_ssize_t index = 0
    for item in obj:
        if isinstance(item, str):
            if _has_control(<str>item):
                found[f"{path}[{index}]"] = None
        elif isinstance(item, (dict, list)):
            _walk(item, f"{path}[{index}]", found)
        index += 1
    return 0


cdef inline object _join(path, name):
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------------------------
# Repeated keys


def repeated_key(body):
    """The path of the first key that one object of the JSON text `body` holds twice, or None.

    RFC 8259 leaves a repeated name's meaning open (most decoders, msgspec included, keep
    the last value; others the first, or refuse), so a body that repeats one means
    different things to different readers. Keys are compared as decoded ("a" and
    "\\u0061" are the same key) and named as `control_char_fields` names paths, e.g.
    "transfers[3].amount". `body` must be valid JSON (decode it first): this is a scan,
    not a parser.
    """
    cdef bytes text = body  # TypeError for anything else, as in the pure twin
    cdef const char *data = text
    cdef Py_ssize_t i = 0, start, n = len(text)
    cdef char c
    cdef bint escaped
    # The frames as in the pure twin; `top` is the innermost (None outside any).
    cdef list top = None
    while i < n:
        c = data[i]
        if c == b'"':
            start = i + 1
            i = start
            escaped = False
            while i < n and data[i] != b'"':
                if data[i] == b'\\':  # skip the escaped character
                    escaped = True
                    i += 1
                i += 1
            if top is not None and top[3]:
                if escaped:
                    key = _json_loads(b'"' + text[start:i] + b'"')
                else:
                    key = PyUnicode_DecodeUTF8(data + start, i - start, NULL)
                if key in <set>top[0]:
                    return _join(_path(top[1]), key)
                (<set>top[0]).add(key)
                top[2] = key
                top[3] = False
        elif c == b'{':
            top = [set(), top, None, True]
        elif c == b'[':
            top = [None, top, 0, False]
        elif c == b'}' or c == b']':
            if top is None:
                raise ValueError("not JSON: a bracket closes nothing")
            top = top[1]
        elif c == b',':
            if top is None:
                raise ValueError("not JSON: a comma outside any container")
            if top[0] is None:
                top[2] = <Py_ssize_t>top[2] + 1
            else:
                top[3] = True
        i += 1
    return None


cdef object _path(list frame):
    """The path of the container inside `frame`'s (None: the document itself)."""
    cdef list names = []
    while frame is not None:
        names.append(frame)
        frame = <list>frame[1] if frame[1] is not None else None
    path = ""
    for frame in reversed(names):
        if frame[0] is None:
            path = f"{path}[{frame[2]}]"
        else:
            path = _join(path, frame[2])
    return path


# ---------------------------------------------------------------------------------------
# Cursors


def encode_cursor(value):
    """The opaque pagination cursor for `value`: its 16 bytes in unpadded URL-safe base64.

    Raises TypeError when `value` is not a uuid.UUID.
    """
    if not isinstance(value, UUID):
        raise TypeError(f"cursor value must be a uuid.UUID, not {type(value).__name__}")
    cdef uint64_t hi, lo
    _uuid_halves(value, &hi, &lo)
    cdef uint8_t raw[16]
    _store_be64(raw, hi)
    _store_be64(raw + 8, lo)
    cdef str text = PyUnicode_New(_CURSOR_LENGTH, 127)
    cdef uint8_t *out = PyUnicode_1BYTE_DATA(text)
    cdef int i
    for i in range(5):
        _encode_triple(raw + 3 * i, out + 4 * i)
    out[20] = _B64_ALPHABET[raw[15] >> 2]
    out[21] = _B64_ALPHABET[(raw[15] & 0x3) << 4]
    return text


cdef inline void _encode_triple(const uint8_t *src, uint8_t *out) noexcept:
    out[0] = _B64_ALPHABET[src[0] >> 2]
    out[1] = _B64_ALPHABET[((src[0] & 0x3) << 4) | (src[1] >> 4)]
    out[2] = _B64_ALPHABET[((src[1] & 0xF) << 2) | (src[2] >> 6)]
    out[3] = _B64_ALPHABET[src[2] & 0x3F]


def decode_cursor(cursor):
    """The UUID behind a cursor made by `encode_cursor`, or None when it is not one.

    Only the exact encoding is accepted (22 URL-safe base64 characters with zero padding
    bits), so each UUID has a single cursor. Never raises.
    """
    if not isinstance(cursor, str) or PyUnicode_GET_LENGTH(cursor) != _CURSOR_LENGTH:
        return None
    cdef uint8_t values[_CURSOR_LENGTH]
    cdef Py_ssize_t i = 0
    cdef Py_UCS4 ch
    for ch in <str>cursor:
        if ch >= 128 or _B64_VALUES[ch] == _INVALID:
            return None
        values[i] = _B64_VALUES[ch]
        i += 1
    # The last character holds the final 2 bits; its 4 padding bits must be zero.
    if values[21] & 0xF:
        return None
    cdef uint8_t raw[16]
    for i in range(5):
        _decode_quad(values + 4 * i, raw + 3 * i)
    raw[15] = (values[20] << 2) | (values[21] >> 4)
    return _uuid_from_int(_int_from_halves(_load_be64(raw), _load_be64(raw + 8)))


cdef inline void _decode_quad(const uint8_t *values, uint8_t *out) noexcept:
    out[0] = (values[0] << 2) | (values[1] >> 4)
    out[1] = ((values[1] & 0xF) << 4) | (values[2] >> 2)
    out[2] = ((values[2] & 0x3) << 6) | values[3]


cdef object _int_from_halves(uint64_t hi, uint64_t lo):
    return (PyLong_FromUnsignedLongLong(hi) << 64) | PyLong_FromUnsignedLongLong(lo)


cdef object _uuid_from_int(number):
    if not _FAST_UUID:
        return UUID(int=number)
    value = object.__new__(UUID)
    # UUID.__setattr__ raises (UUIDs are immutable); the generic setter is what
    # UUID.__init__ itself goes through via object.__setattr__.
    PyObject_GenericSetAttr(value, "int", number)
    PyObject_GenericSetAttr(value, "is_safe", _SAFE_UNKNOWN)
    return value


cdef inline void _store_be64(uint8_t *out, uint64_t value) noexcept:
    cdef int i
    for i in range(7, -1, -1):
        out[i] = value & 0xFF
        value >>= 8


cdef inline uint64_t _load_be64(const uint8_t *src) noexcept:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value = (value << 8) | src[i]
    return value
