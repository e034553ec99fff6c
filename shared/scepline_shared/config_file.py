"""The configuration file (``SCEPLINE_CONFIG``, TOML): several SCEP endpoints,
each with its own challenge provider, certificate profile and renewal policy.

The file is read and checked once at start-up; every mistake is reported, one
line each, with its key path (``endpoints.wifi.profile.extended_key_usage[0]:
unknown EKU 'clientAuht'``), by :func:`load_config`, which raises
:class:`ConfigError` carrying them all. Nothing here reads the environment:
``configured.endpoints_from`` combines the file with the settings.

Reference: docs/endpoints.md.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from .ca.profile import (
    EKU_NAMES,
    ProfileNameError,
    eku_name,
    parse_key_types,
    parse_key_usage,
    subject_attribute,
)
from .store.models import DEFAULT_ENDPOINT

__all__ = [
    "DEFAULT_CA",
    "DEFAULT_ENDPOINT",
    "RESERVED_PATHS",
    "CaConfig",
    "ConfigError",
    "ConfigFile",
    "EndpointConfig",
    "IntuneTenantConfig",
    "LimitsConfig",
    "ProfileConfig",
    "load_config",
    "parse_duration",
    "scep_path",
]

#: The CA under SCEPLINE_DATA_DIR/ca, as the SCEPLINE_CA_* settings describe it.
DEFAULT_CA = "default"

# Lower case, digits, '-' and '_': a path segment that needs no escaping.
_ENDPOINT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# Paths the SCEP port serves for other purposes (or that every endpoint shares).
RESERVED_PATHS: tuple[str, ...] = (
    "/",
    "/crl",
    "/ca",
    "/ocsp",
    "/healthz",
    "/readyz",
    "/metrics",
    "/cgi-bin",
)
_WINDOWS_SUFFIX = "/pkiclient.exe"
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def scep_path(name: str) -> str:
    """Where an endpoint of the file is served: ``/scep/<name>``."""
    return f"/scep/{name}"


def parse_duration(value: object) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w``, ``1h30m``, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 24h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            match = _DURATION.fullmatch(text)
            if not text or match is None or not any(match.groups()):
                raise ValueError(f"{value!r} is not a duration; write e.g. 30m, 24h, 7d or 1h30m")
            weeks, days, hours, minutes, secs = (int(part or 0) for part in match.groups())
            seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError("expected a duration such as 30m, 24h or 7d")
    if seconds <= 0:
        raise ValueError("a duration must be longer than 0")
    return timedelta(seconds=seconds)


# --- names, checked one by one so that each bad item gets its own line ----------


def _profile_name(parse: Any) -> Any:
    def check(raw: str) -> str:
        try:
            parse([raw])
        except ProfileNameError as error:
            raise ValueError(error.detail) from None
        return raw

    return check


def _eku(raw: str) -> str:
    text = raw.strip()
    if re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", text) or eku_name(text) in EKU_NAMES:
        return raw
    close = difflib.get_close_matches(eku_name(text), list(EKU_NAMES), n=1)
    hint = f" (did you mean {_camel(close[0])!r}?)" if close else ""
    raise ValueError(
        f"unknown EKU {raw!r}{hint}; use one of: {', '.join(map(_camel, EKU_NAMES))} "
        "(client_auth... also), or a dotted OID"
    )


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _key_usage(raw: str) -> str:
    try:
        parse_key_usage([raw])
    except ProfileNameError as error:
        if "at least one" in error.detail or "need key_agreement" in error.detail:
            return raw  # judged on the whole list
        raise ValueError(error.detail) from None
    return raw


def _san_type(raw: str) -> str:
    known = ("dns", "email", "uri", "ip", "upn", "other_name", "directory_name", "registered_id")
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", raw.strip()).replace("-", "_").lower()
    if name not in known:
        raise ValueError(f"unknown SAN type {raw!r}; known: {', '.join(known)}")
    return raw


def _subject_attribute(raw: str) -> str:
    try:
        subject_attribute(raw)
    except ProfileNameError as error:
        raise ValueError(error.detail) from None
    return raw


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as error:
        raise ValueError(f"not a regular expression: {error}") from None
    return raw


def _endpoint_name(raw: str) -> str:
    if not _ENDPOINT_NAME.fullmatch(raw):
        raise ValueError(
            f"{raw!r} is not an endpoint name: 1 to 32 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (it is a URL path segment: /scep/NAME)"
        )
    if raw == DEFAULT_ENDPOINT:
        raise ValueError(
            "'default' is the name of the endpoint the SCEPLINE_* environment settings "
            'describe (at /scep); name this one otherwise (default_endpoint = "NAME" serves '
            "it at /scep)"
        )
    return raw


def _ca_name(raw: str) -> str:
    if not _ENDPOINT_NAME.fullmatch(raw):
        raise ValueError(
            f"{raw!r} is not a CA name: 1 to 32 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (it names a directory and token labels)"
        )
    if raw == DEFAULT_CA:
        raise ValueError(
            "'default' is the CA under SCEPLINE_DATA_DIR/ca, which the SCEPLINE_CA_* settings "
            "describe; name this one otherwise"
        )
    return raw


def _extra_path(raw: str) -> str:
    path = raw.strip()
    if not path.startswith("/") or "//" in path or "?" in path or "#" in path:
        raise ValueError(f"{raw!r} is not a URL path (it starts with / and has no query)")
    if path.rstrip("/").endswith(_WINDOWS_SUFFIX):
        raise ValueError(
            f"{raw!r}: leave out {_WINDOWS_SUFFIX}; every endpoint path also answers with it"
        )
    return path.rstrip("/") or "/"


EkuName = Annotated[str, AfterValidator(_eku)]
KeyUsageName = Annotated[str, AfterValidator(_key_usage)]
SanTypeName = Annotated[str, AfterValidator(_san_type)]
KeyTypeName = Annotated[str, AfterValidator(_profile_name(parse_key_types))]
SubjectAttributeName = Annotated[str, AfterValidator(_subject_attribute)]
Pattern = Annotated[str, AfterValidator(_regex)]
EndpointName = Annotated[str, AfterValidator(_endpoint_name)]
CaName = Annotated[str, AfterValidator(_ca_name)]
ExtraPath = Annotated[str, AfterValidator(_extra_path)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ProfileConfig(_Strict):
    """``[endpoints.NAME.profile]``: what certificates of the endpoint carry and
    what requests may ask for. Unset keys take the built-in defaults (not the
    SCEPLINE_CERT_* settings, which describe the default endpoint)."""

    validity_days: int = Field(default=365, ge=1, le=36500)
    key_usage: list[KeyUsageName] = ["digital_signature", "key_encipherment"]
    # Fixed EKUs; with extended_key_usage_from_csr, those of a CSR that asks for none.
    extended_key_usage: list[EkuName] = ["client_auth"]
    # EKUs a CSR may ask for (Intune profiles do): issued as asked when all are here.
    extended_key_usage_from_csr: list[EkuName] = []
    san_types: list[SanTypeName] = ["dns", "email", "uri", "ip", "upn"]
    required_san_types: list[SanTypeName] = []
    san_patterns: dict[Annotated[str, AfterValidator(_san_type)], Pattern] = {}
    on_disallowed_san: Literal["drop", "refuse"] = "drop"
    copy_subject: bool = True
    required_subject_attributes: list[SubjectAttributeName] = []
    subject_patterns: dict[Annotated[str, AfterValidator(_subject_attribute)], Pattern] = {}
    key_types: list[KeyTypeName] = ["rsa", "P-256", "P-384"]
    min_rsa_bits: int = Field(default=2048, ge=2048, le=16384)
    max_rsa_bits: int = Field(default=8192, ge=2048, le=16384)
    allow_wildcard_dns: bool = False
    allow_control_characters: bool = False
    allow_ca_subject: bool = False
    vouched_san_types: list[Literal["upn", "sid"]] = ["upn", "sid"]

    @model_validator(mode="after")
    def _whole_lists(self) -> ProfileConfig:
        problems = []
        if not self.key_usage:
            problems.append("key_usage: at least one key usage is needed (RFC 5280 4.2.1.3)")
        else:
            try:
                parse_key_usage(self.key_usage)
            except ProfileNameError as error:
                problems.append(f"key_usage: {error.detail}")
        if not self.key_types:
            problems.append("key_types: at least one requester key type is needed")
        if self.max_rsa_bits < self.min_rsa_bits:
            problems.append(
                f"max_rsa_bits: {self.max_rsa_bits} is below min_rsa_bits {self.min_rsa_bits}"
            )
        allowed = {_san_type_key(name) for name in self.san_types}
        for name in self.required_san_types:
            if _san_type_key(name) not in allowed:
                problems.append(
                    f"required_san_types: {name!r} must be among san_types to be required"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _san_type_key(raw: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", raw.strip()).replace("-", "_").lower()


Provider = Literal["static", "one-time", "manual", "intune"]


def _https(raw: str) -> str:
    if not raw.lower().startswith("https://"):
        raise ValueError("must be an https:// URL")
    return raw


HttpsUrl = Annotated[str, AfterValidator(_https)]


class IntuneTenantConfig(_Strict):
    """``[endpoints.NAME.intune]``: the Entra app registration (and tenant) this
    Intune endpoint validates and notifies with, instead of the SCEPLINE_INTUNE_*
    settings: one fleet per tenant. Unset keys of the service URLs and the CA
    bundle take the SCEPLINE_INTUNE_* settings' values."""

    tenant: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    # Exactly one credential: a secret, a file holding it, or a certificate and its key.
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    client_certificate_file: Path | None = None
    client_key_file: Path | None = None
    authority_url: HttpsUrl | None = None
    graph_url: HttpsUrl | None = None
    graph_resource_url: str | None = None
    resource_url: HttpsUrl | None = None
    ca_bundle: Path | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> IntuneTenantConfig:
        if (self.client_certificate_file is None) != (self.client_key_file is None):
            raise ValueError("client_certificate_file and client_key_file go together")
        given = [
            self.client_secret is not None,
            self.client_secret_file is not None,
            self.client_certificate_file is not None,
        ]
        if sum(given) != 1:
            raise ValueError(
                "exactly one credential: client_secret, client_secret_file, or "
                "client_certificate_file with client_key_file"
            )
        return self


class LimitsConfig(_Strict):
    """``[endpoints.NAME.limits]``: what one endpoint may take, so that one
    busy or abused endpoint does not starve the others."""

    # New enrolment requests per minute, per serving process (bursts up to that
    # many); beyond: HTTP 503 with Retry-After (clients retry). 0: no limit.
    enrolments_per_minute: int = Field(default=0, ge=0, le=1_000_000)
    # challenge = "manual": requests waiting for an operator at once; beyond, a
    # new one is refused (badRequest). 0: no limit.
    max_awaiting_approval: int = Field(default=1000, ge=0, le=1_000_000)
    # How long a PKIOperation waits for the outcome before answering PENDING
    # (unset: SCEPLINE_SYNC_WAIT_SECONDS).
    sync_wait_seconds: float | None = Field(default=None, ge=0, le=300)


class EndpointConfig(_Strict):
    """``[endpoints.NAME]``: one SCEP endpoint, served at ``/scep/NAME``."""

    challenge: Provider
    # challenge = "static": the shared secret, or a file holding it.
    static_challenge: SecretStr | None = None
    static_challenge_file: Path | None = None
    # challenge = "one-time": how long `scepline challenge new` makes them valid (--ttl).
    challenge_ttl: Duration = timedelta(hours=24)
    # challenge = "manual": requests not approved this long after they arrived fail.
    approval_ttl_hours: float = Field(default=72.0, gt=0, le=24 * 366)
    # A request signed by a valid certificate of ours that keeps its identity is
    # a renewal, approved without challenge (Intune validates every request
    # anyway): when that certificate comes from this endpoint ("same-endpoint"),
    # from any endpoint of this deployment ("any-endpoint"), or never ("never":
    # every request is validated like a first enrolment).
    renewal: Literal["same-endpoint", "any-endpoint", "never"] = "same-endpoint"
    # A renewal asks for the renewed certificate's SANs or fewer, or exactly them.
    renewal_san_match: Literal["subset", "exact"] = "subset"
    # The CA that signs for this endpoint.
    ca: str = DEFAULT_CA
    # Further URL paths this endpoint answers at, besides /scep/NAME (an NDES URL
    # being migrated, say); each also with /pkiclient.exe appended.
    paths: list[ExtraPath] = []
    profile: ProfileConfig = ProfileConfig()
    limits: LimitsConfig = LimitsConfig()
    # challenge = "intune": the tenant's app registration (unset: SCEPLINE_INTUNE_*).
    intune: IntuneTenantConfig | None = None

    @model_validator(mode="after")
    def _provider_settings(self) -> EndpointConfig:
        if self.intune is not None and self.challenge != "intune":
            raise ValueError('an [intune] table is only for challenge = "intune"')
        given = [
            key
            for key in ("static_challenge", "static_challenge_file")
            if getattr(self, key) is not None
        ]
        if self.challenge == "static" and len(given) != 1:
            raise ValueError(
                'challenge = "static" needs exactly one of static_challenge and '
                "static_challenge_file"
            )
        if self.challenge != "static" and given:
            raise ValueError(f'{given[0]} is only for challenge = "static"')
        return self


class CaConfig(_Strict):
    """``[cas.NAME]``: a CA of its own (keys, generations, rollover, CRLs) under
    SCEPLINE_DATA_DIR/cas/NAME, its keys in the token as ``<label>-NAME`` with
    SCEPLINE_KEY_BACKEND=pkcs11. Made by `scepline ca init` (or `up`) as described
    here; the CA's own certificate fixes what it is afterwards."""

    common_name: str | None = Field(default=None, min_length=1, max_length=64)
    ra_common_name: str | None = Field(default=None, min_length=1, max_length=64)
    key_type: Literal["rsa", "ec"] = "rsa"
    # RSA modulus bits (2048..8192), or the EC curve size (256 or 384); unset: 3072 / 256.
    key_size: int | None = Field(default=None, ge=256, le=8192)
    validity_days: int = Field(default=3650, ge=1, le=36500)

    @model_validator(mode="after")
    def _key_size(self) -> CaConfig:
        if self.key_size is None:
            return self
        if self.key_type == "ec" and self.key_size not in (256, 384):
            raise ValueError("key_size: an EC CA key is 256 or 384 (bits of the curve)")
        if self.key_type == "rsa" and not 2048 <= self.key_size <= 8192:
            raise ValueError("key_size: an RSA CA key has 2048 to 8192 bits")
        return self


class ConfigFile(_Strict):
    """The whole file."""

    # Which endpoint /scep (and /cgi-bin/pkiclient.exe) serves: unset, the one
    # the SCEPLINE_* environment settings describe, named "default"; a name, that
    # endpoint of the file; false, none (/scep answers 404).
    default_endpoint: str | Literal[False] | None = None
    endpoints: dict[EndpointName, EndpointConfig] = Field(min_length=1)
    cas: dict[CaName, CaConfig] = {}


class ConfigError(ValueError):
    """The file cannot be used; ``problems`` are its mistakes, one line each."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = [f"{path}: {problem}" for problem in problems]
        super().__init__("\n".join(self.problems))


def load_config(path: Path, *, has_default: bool = True) -> ConfigFile:
    """The file at ``path``, checked; :class:`ConfigError` with every mistake.

    ``has_default``: whether an endpoint named by the environment settings
    exists beside the file's (it does unless ``default_endpoint`` says
    otherwise), for the path checks."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(path, [f"cannot be read: {error.strerror or error}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["is not UTF-8 text"]) from None
    text, duplicates = _rename_duplicates(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, [*duplicates.problems, f"not valid TOML: {error}"]) from None
    for table, placeholder in duplicates.placeholders:
        declared = data.get(table)
        if isinstance(declared, dict):
            declared.pop(placeholder, None)
    problems = list(duplicates.problems)
    parsed: ConfigFile | None = None
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as error:
        problems += describe(error)
    problems += _cross_checks(data)
    if problems:
        raise ConfigError(path, problems)
    assert parsed is not None
    return parsed


# --- duplicate endpoint names ------------------------------------------------------

_HEADER = re.compile(
    r"""^(?P<lead>\s*\[\s*(?P<table>endpoints|cas)\s*\.\s*)"""
    r"""(?P<name>"[^"\n]*"|'[^'\n]*'|[A-Za-z0-9_-]+)"""
    r"""(?P<rest>\s*(?:\.[^\]\n]*)?\]\s*(?:\#.*)?)$"""
)


class _Duplicates:
    def __init__(self) -> None:
        self.problems: list[str] = []
        # (table, placeholder name) of each repeated declaration
        self.placeholders: list[tuple[str, str]] = []


def _rename_duplicates(text: str) -> tuple[str, _Duplicates]:
    """TOML stops at a table declared twice; to report every other mistake too,
    each repeated ``[endpoints.NAME]`` or ``[cas.NAME]`` (and its sub-tables) is
    renamed to a placeholder that is reported and left out."""
    found = _Duplicates()
    first_line: dict[tuple[str, str], int] = {}
    current: dict[tuple[str, str], str] = {}
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("[["):
            continue
        match = _HEADER.match(line)
        if match is None:
            continue
        table = match["table"]
        name = match["name"].strip("\"'")
        key = (table, name)
        rest = match["rest"].strip()
        if rest.startswith("]"):  # [endpoints.NAME]: a declaration of the endpoint
            if key in first_line:
                placeholder = f"{name} (again at line {number})"
                current[key] = placeholder
                found.placeholders.append((table, placeholder))
                what = "endpoint" if table == "endpoints" else "CA"
                found.problems.append(
                    f"{table}.{name}: duplicate {what} name: declared again at line {number} "
                    f"(first at line {first_line[key]}); {what} names must be unique"
                )
            else:
                first_line[key] = number
                current[key] = name
        if current.get(key, name) != name:
            lines[number - 1] = f'{match["lead"]}"{current[key]}"{match["rest"]}'
    return "\n".join(lines), found


# --- checks across the file ---------------------------------------------------------


def _cross_checks(data: Mapping[str, Any]) -> list[str]:
    """Mistakes no single key shows: unknown references and paths two endpoints
    (or an endpoint and the service itself) claim. Run on the raw data, so they
    are reported beside the others."""
    problems: list[str] = []
    endpoints = data.get("endpoints")
    if not isinstance(endpoints, dict):
        return problems
    names = [name for name in endpoints if isinstance(name, str)]
    default = data.get("default_endpoint")
    if isinstance(default, str) and default not in endpoints:
        problems.append(f"default_endpoint: no endpoint named {default!r}{_known(names)}")
    elif default is True:
        problems.append('default_endpoint: name an endpoint ("wifi"), or false for none')
    # path -> (endpoint, how to name the claim)
    claimed: dict[str, tuple[str, str]] = {}
    if default is None:
        claimed["/scep"] = (DEFAULT_ENDPOINT, "/scep, the default endpoint's (SCEPLINE_* settings)")
    elif isinstance(default, str) and default in endpoints:
        claimed["/scep"] = (default, f"/scep, endpoint {default}'s (default_endpoint)")
    for name in names:
        claimed.setdefault(scep_path(name), (name, f"endpoint {name}'s path"))
    cas = data.get("cas")
    ca_names = [DEFAULT_CA, *(cas if isinstance(cas, dict) else {})]
    for name, endpoint in endpoints.items():
        if not isinstance(endpoint, dict):
            continue
        ca = endpoint.get("ca", DEFAULT_CA)
        if isinstance(ca, str) and ca not in ca_names:
            close = difflib.get_close_matches(ca, ca_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"endpoints.{name}.ca: unknown CA {ca!r}{hint}; CAs: {', '.join(ca_names)} "
                "(default: the CA under SCEPLINE_DATA_DIR/ca; others: [cas.NAME])"
            )
        paths = endpoint.get("paths")
        if not isinstance(paths, list):
            continue
        for index, raw in enumerate(paths):
            if not isinstance(raw, str):
                continue
            try:
                path = _extra_path(raw)
            except ValueError:
                continue  # reported by the model
            where = f"endpoints.{name}.paths[{index}]"
            conflict = _path_conflict(path, name, names, claimed)
            if conflict is not None:
                problems.append(f"{where}: {conflict}")
            else:
                claimed[path] = (name, where)
    return problems


def _path_conflict(
    path: str, name: str, names: Iterable[str], claimed: Mapping[str, tuple[str, str]]
) -> str | None:
    for reserved in RESERVED_PATHS:
        if path == reserved or (reserved != "/" and path.startswith(reserved + "/")):
            return f"path {path!r} conflicts with {reserved!r}, which the SCEP port serves itself"
    if path in claimed:
        owner, what = claimed[path]
        if owner == name and what.startswith("endpoint "):
            return f"path {path!r} is already this endpoint's (/scep/{name})"
        return f"path {path!r} conflicts with {what}"
    if path.startswith("/scep/") and path.removeprefix("/scep/") not in names:
        return f"path {path!r}: paths under /scep/ name endpoints (/scep/NAME); use one outside"
    return None


def _known(names: Sequence[str]) -> str:
    return f" (endpoints: {', '.join(names)})" if names else ""


# --- what the operator reads ----------------------------------------------------------

_MESSAGES = {
    "int_parsing": "is not a whole number",
    "int_type": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "bool_parsing": "is not true or false",
    "bool_type": "is not true or false",
    "string_type": "is not a string (put it in quotes)",
    "list_type": "is not a list ([...])",
    "dict_type": "is not a table",
    "model_type": "is not a table",
    "greater_than": "is out of range",
    "greater_than_equal": "is out of range",
    "less_than": "is out of range",
    "less_than_equal": "is out of range",
}


def describe(error: ValidationError) -> list[str]:
    """One line per mistake: the key path, then what is wrong."""
    lines: list[str] = []
    for problem in error.errors(include_url=False, include_input=False):
        location = [part for part in problem["loc"] if part != "[key]"]
        # A union (default_endpoint: str | false) reports each branch: keep the first.
        location = [
            part for part in location if not (isinstance(part, str) and part in _UNION_TAGS)
        ]
        path = _key_path(location)
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"{path}: unknown key{_suggestion(location)}")
        elif kind == "missing":
            lines.append(f"{path}: missing{_accepted_at(location)}")
        elif kind == "literal_error":
            expected = problem.get("ctx", {}).get("expected", "")
            lines.append(f"{path}: not one of the accepted values: {expected}")
        elif kind == "too_short" and location == ["endpoints"]:
            lines.append("endpoints: the file declares no endpoint ([endpoints.NAME])")
        else:
            message = _MESSAGES.get(kind) or str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {message}" if path else message)
    return list(dict.fromkeys(lines))


_UNION_TAGS = {"str", "literal[False]", "none"}


def _key_path(location: Sequence[object]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            text = str(part)
            segment = text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else f'"{text}"'
            path += f".{segment}" if path else segment
    return path


def _model_at(location: Sequence[object]) -> type[BaseModel] | None:
    """The model whose keys are at ``location``'s parent (for suggestions)."""
    model: type[BaseModel] | None = ConfigFile
    parts = list(location[:-1])
    while parts and model is not None:
        part = parts.pop(0)
        if model is ConfigFile and part in ("endpoints", "cas"):
            model = EndpointConfig if part == "endpoints" else CaConfig
            if parts:
                parts.pop(0)  # the endpoint's or CA's name
            else:
                return None
        elif model is EndpointConfig and part in ("profile", "limits", "intune"):
            model = {"profile": ProfileConfig, "limits": LimitsConfig}.get(
                str(part), IntuneTenantConfig
            )
        else:
            return None
    return model


def _suggestion(location: Sequence[object]) -> str:
    model = _model_at(location)
    if model is None or not location:
        return ""
    close = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _accepted_at(location: Sequence[object]) -> str:
    if location and location[-1] == "challenge":
        return " (one of: static, one-time, manual, intune)"
    return ""
