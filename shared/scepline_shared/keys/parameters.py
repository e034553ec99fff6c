"""Which keys a CA generation may be made with: the one check both key backends
(files, a PKCS#11 token) apply before generating one."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["MIN_RSA_BITS", "key_parameters"]

MIN_RSA_BITS = 2048

_CURVES: dict[str | int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
    "p-256": ec.SECP256R1,
    "p-384": ec.SECP384R1,
    "p-521": ec.SECP521R1,
    "prime256v1": ec.SECP256R1,
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}


def key_parameters(
    kind: Literal["rsa", "ec"], size_or_curve: int | str | ec.EllipticCurve
) -> int | ec.EllipticCurve:
    """The RSA modulus size (an int >= 2048), or the EC curve: P-256/P-384/P-521
    by size (256/384/521), name (``"P-256"``, ``"secp384r1"``, ``"prime256v1"``...)
    or curve object. TypeError/ValueError for anything else."""
    if kind == "rsa":
        if isinstance(size_or_curve, bool) or not isinstance(size_or_curve, int):
            raise TypeError(f"RSA key size must be an int, got {size_or_curve!r}")
        if size_or_curve < MIN_RSA_BITS:
            raise ValueError(f"RSA key size {size_or_curve} < {MIN_RSA_BITS}")
        return size_or_curve
    if kind != "ec":
        raise ValueError(f"unknown key kind {kind!r} (expected 'rsa' or 'ec')")
    if isinstance(size_or_curve, ec.EllipticCurve):
        curve_cls: type[ec.EllipticCurve] | None = type(size_or_curve)
    else:
        lookup = size_or_curve.lower() if isinstance(size_or_curve, str) else size_or_curve
        curve_cls = _CURVES.get(lookup)
    if curve_cls is None or curve_cls not in _CURVES.values():
        raise ValueError(f"unsupported EC curve {size_or_curve!r}")
    return curve_cls()
