"""What a PKCS#11 token says about a private key: proof that it never leaves the token."""

from __future__ import annotations

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11e

from scepline_shared.keys.pkcs11 import Pkcs11Token

__all__ = ["assert_never_leaves_the_token", "private_key_attributes"]

_PROTECTION = {
    "sensitive": Attribute.SENSITIVE,
    "always_sensitive": Attribute.ALWAYS_SENSITIVE,
    "extractable": Attribute.EXTRACTABLE,
    "never_extractable": Attribute.NEVER_EXTRACTABLE,
    "local": Attribute.LOCAL,
    "token": Attribute.TOKEN,
}


def private_key_attributes(token: Pkcs11Token, label: str) -> dict[str, object]:
    """The CKA_ID and protection attributes of the private key ``label``, and what
    reading its secret gives (the value, or the exception the token raised): the
    private exponent of an RSA key, the private value (CKA_VALUE) of an EC key."""

    def read(session: pkcs11.Session) -> dict[str, object]:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        values: dict[str, object] = {"id": bytes(key[Attribute.ID])}
        values.update({name: key[attribute] for name, attribute in _PROTECTION.items()})
        secret = Attribute.VALUE if key.key_type == KeyType.EC else Attribute.PRIVATE_EXPONENT
        try:
            values["private_exponent"] = key[secret]
        except p11e.AttributeSensitive as refused:
            values["private_exponent"] = refused
        return values

    return token.run(read)


def assert_never_leaves_the_token(values: dict[str, object]) -> None:
    """``values`` (from :func:`private_key_attributes`) are those of a key generated
    inside the token, kept there, sensitive and never extractable."""
    assert values["sensitive"] is True
    assert values["always_sensitive"] is True
    assert values["extractable"] is False
    assert values["never_extractable"] is True
    assert values["local"] is True  # generated inside the token, not imported
    assert values["token"] is True
    assert isinstance(values["private_exponent"], p11e.AttributeSensitive)
