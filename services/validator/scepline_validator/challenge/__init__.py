"""Challenge providers: who decides whether an enrolment request is genuine.

A provider is one small Protocol, chosen per endpoint in the validator's wiring:
a static shared secret, one-time challenges, an operator's approval, or Intune.
"""

from .base import ChallengeValidator, ValidationOutcome, ValidationRequest, checks_profile_first
from .intune import IntuneChallengeValidator
from .manual import ManualApprovalValidator
from .one_time import ConsumesChallenges, OneTimeChallengeValidator
from .static import StaticChallengeValidator, challenge_password

__all__ = [
    "ChallengeValidator",
    "ConsumesChallenges",
    "IntuneChallengeValidator",
    "ManualApprovalValidator",
    "OneTimeChallengeValidator",
    "StaticChallengeValidator",
    "ValidationOutcome",
    "ValidationRequest",
    "challenge_password",
    "checks_profile_first",
]
