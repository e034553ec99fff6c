"""Certificate serial numbers as text: the one place that reads and spells them.

The store keys certificates by serial, so one certificate has one spelling:
lowercase hex, no leading zeros, no separators. People and tools spell serials
many ways (Intune, OpenSSL's ``12:AB``, a pasted ``0x..``); they are read here.
"""

from __future__ import annotations

__all__ = ["MAX_SERIAL_HEX_DIGITS", "parse_serial", "serial_hex"]

# 32 octets: beyond RFC 5280's 20, so a serial someone else's CA issued still reads.
MAX_SERIAL_HEX_DIGITS = 64


def parse_serial(text: str) -> int | None:
    """A serial as people and tools spell it: hex in any case, with or without a
    ``0x`` prefix, leading zeros, ``:``, spaces or dashes; None if it is not one
    (empty, not hex, zero, or longer than 32 octets)."""
    compact = text.strip().lower().removeprefix("0x")
    compact = compact.replace(":", "").replace(" ", "").replace("-", "")
    try:
        value = int(compact, 16)
    except ValueError:
        return None
    if value <= 0 or len(format(value, "x")) > MAX_SERIAL_HEX_DIGITS:
        return None
    return value


def serial_hex(serial: int | str) -> str:
    """The canonical spelling of a serial given as an int (as from
    ``x509.Certificate.serial_number``) or as text :func:`parse_serial` reads.

    TypeError for anything else; ValueError for a non-positive, too long or
    unreadable serial."""
    if isinstance(serial, bool):  # bool is an int; a serial of True is a bug
        raise TypeError("serial must be an int or hex text")
    if isinstance(serial, str):
        value = parse_serial(serial)
        if value is None:
            raise ValueError(f"serial {serial!r} is not a positive hexadecimal serial")
    elif isinstance(serial, int):
        value = serial
    else:
        raise TypeError(f"serial must be an int or hex text, got {type(serial).__name__}")
    if value <= 0:
        raise ValueError(f"serial must be positive, got {value}")
    spelled = format(value, "x")
    if len(spelled) > MAX_SERIAL_HEX_DIGITS:
        raise ValueError("serial longer than 32 octets")
    return spelled
