"""Challenge providers: who decides whether an enrolment request is genuine.

A provider is one small Protocol, chosen once in the validator's wiring
(static shared secret for labs, Intune for fleets).
"""

from .base import ChallengeValidator, ValidationOutcome, ValidationRequest
from .intune import IntuneChallengeValidator
from .static import StaticChallengeValidator, challenge_password

__all__ = [
    "ChallengeValidator",
    "IntuneChallengeValidator",
    "StaticChallengeValidator",
    "ValidationOutcome",
    "ValidationRequest",
    "challenge_password",
]
