"""Microsoft Intune's SCEP challenge validation API, as a third-party CA calls it.

See ``docs/specs/intune-api.md`` (the facts, with sources) and
``docs/intune.md`` (the operator's view): Entra ID app-only tokens through
MSAL, Graph discovery of the tenant's Intune shard, then ``ScepActions``
validateRequest / successNotification / failureNotification, and the PKI
connector's revocation requests, over httpx.
``IntuneClient`` is the one entry point.
"""

from .client import IntuneClient
from .config import INTUNE_APP_ID, SCEP_SERVICE, CertificateCredential, IntuneConfig
from .errors import (
    SUCCESS,
    IntuneConfigurationError,
    IntuneError,
    IntuneProtocolError,
    IntuneResult,
    IntuneUnavailable,
)
from .wire import MAX_ERROR_DESCRIPTION

__all__ = [
    "INTUNE_APP_ID",
    "MAX_ERROR_DESCRIPTION",
    "SCEP_SERVICE",
    "SUCCESS",
    "CertificateCredential",
    "IntuneClient",
    "IntuneConfig",
    "IntuneConfigurationError",
    "IntuneError",
    "IntuneProtocolError",
    "IntuneResult",
    "IntuneUnavailable",
]
