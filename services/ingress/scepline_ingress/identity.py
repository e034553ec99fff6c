"""What ingress holds: the RA key pair and the public CA certificates."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["ScepIdentity"]


@dataclass(frozen=True)
class ScepIdentity:
    # Decrypts requests and signs CertReps. SCEP key transport needs RSA.
    ra_key: rsa.RSAPrivateKey
    ra_certificate: x509.Certificate
    # The issuing CA, then any older CA still trusted for renewals and chains.
    ca_certificate: x509.Certificate
    previous_ca_certificates: tuple[x509.Certificate, ...] = ()
    # Staged by a CA rollover; served by GetNextCACert until the switch.
    next_ca_certificate: x509.Certificate | None = None

    @property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        return (self.ca_certificate, *self.previous_ca_certificates)

    def issued_by_us(self, certificate: x509.Certificate) -> bool:
        """True when ``certificate`` was signed by one of our CA keys."""
        for ca in self.ca_certificates:
            try:
                certificate.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False
