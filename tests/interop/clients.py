"""Drive real third-party SCEP clients against a SCEP server URL, for interop tests.

Three clients from Debian 12 are supported (``docs/specs/scep-clients.md``, "Debian packages"):

* ``scepclient``: micromdm scepclient 2.1.0 (Debian package ``scep``).
* ``strongswan``: strongSwan 5.9.8 ``pki --scepca`` / ``pki --scep`` (``strongswan-pki`` plus
  the standard and extra plugin packages).
* ``certmonger``: certmonger 0.79.17. A private daemon is run on a private D-Bus session bus
  (``dbus-run-session``), with all its state in the work directory.

Every enrolment runs in the work directory it is given. Use a fresh one per enrolment:
scepclient, for example, reuses a ``csr.pem`` it finds there. Every subprocess runs in its
own process group with a hard deadline, and the whole group is killed when time runs out,
so a client that hangs (e.g. on PENDING) never hangs a test. Nothing here raises because a
client failed: the :class:`EnrolResult` carries the exit status and the full
stdout/stderr transcript for diagnostics. Only :func:`fetch_ca_certs_strongswan` raises
(:class:`InteropError`), because it has nothing else to return.

Subject alternative names (``sans``) use a common syntax for every client. A SAN is
``dns:NAME``, ``email:ADDR``, ``ip:ADDR``, ``principal:KRB5NAME`` (certmonger only) or
a bare value, which is taken as an IP address if it parses as one, as an e-mail address
if it contains ``@``, and as a DNS name otherwise.

Only the standard library and ``cryptography`` are used. Run this file as a script only
through :func:`enrol_certmonger`, which uses it as the driver inside the D-Bus session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

__all__ = [
    "CERTMONGER",
    "SCEPCLIENT",
    "STRONGSWAN",
    "TIMED_OUT",
    "CaCertChoice",
    "EnrolResult",
    "InteropError",
    "classify_ca_certs",
    "enrol_certmonger",
    "enrol_scepclient",
    "enrol_strongswan",
    "fetch_ca_certs_strongswan",
    "load_certificate",
    "split_san",
]

SCEPCLIENT = "scepclient"
CERTMONGER = "certmonger"
STRONGSWAN = "strongswan"

#: The return code of an :class:`EnrolResult` whose client was killed at its deadline.
TIMED_OUT = -int(signal.SIGKILL)

# Environment variables that could send loopback traffic through a proxy.
_PROXY_VARS = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


class InteropError(RuntimeError):
    """A helper step that must succeed did not, e.g. ``pki --scepca``."""

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "") -> None:
        super().__init__(f"{message}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class EnrolResult:
    """The outcome of one enrolment by a real SCEP client."""

    client: str  # "scepclient" | "certmonger" | "strongswan"
    returncode: int  # of the enrolment step; TIMED_OUT (-9) if it was killed at the deadline
    certificate: x509.Certificate | None  # the cert the client itself wrote after the CertRep
    key_path: Path  # the private key the certificate was requested for
    stdout: str  # transcript of every step: command line, exit status, duration, stdout
    stderr: str  # the steps' stderr (for certmonger: the daemon's debug log)
    workdir: Path
    # certmonger only: the request's ``status`` and ``ca-error`` in ``getcert list`` at the
    # end, e.g. MONITORING, CA_REJECTED (the CA refused) or CA_UNREACHABLE.
    certmonger_status: str = ""
    certmonger_ca_error: str = ""

    @property
    def ok(self) -> bool:
        """True if the client exited 0 and wrote a certificate."""
        return self.returncode == 0 and self.certificate is not None


# ---------------------------------------------------------------------------------------
# Subprocess plumbing
# ---------------------------------------------------------------------------------------


@dataclass
class _Step:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


@dataclass
class _Transcript:
    """Collects the steps of one enrolment and renders them for :class:`EnrolResult`."""

    deadline: float
    steps: list[_Step] = field(default_factory=list)

    def remaining(self) -> float:
        return max(0.5, self.deadline - time.monotonic())

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> _Step:
        budget = self.remaining() if timeout is None else min(timeout, self.remaining())
        step = _run(argv, cwd=cwd, env=env, timeout=budget)
        self.steps.append(step)
        return step

    def stdout(self) -> str:
        parts = []
        for s in self.steps:
            status = "TIMED OUT, killed" if s.timed_out else f"exit {s.returncode}"
            parts.append(f"$ {_shell_join(s.argv)}\n# {status} after {s.seconds:.2f}s\n{s.stdout}")
        return "\n".join(parts)

    def stderr(self) -> str:
        return "\n".join(f"$ {_shell_join(s.argv)}\n{s.stderr}" for s in self.steps)


def _shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def _run(argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None, timeout: float) -> _Step:
    """Run ``argv`` in its own process group; kill the whole group at ``timeout``."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env if env is not None else _client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            # Something outside the group still holds the pipes; give up on the output.
            proc.kill()
            proc.wait()
            out, err = b"", b"[harness] output lost: pipes held open by an escaped process\n"
        err += f"\n[harness] timed out after {timeout:.1f}s; process group killed\n".encode()
    finally:
        # The client itself exited, but it may have left children in its group.
        _kill_leftovers(proc.pid)
    return _Step(
        argv=list(argv),
        returncode=proc.returncode if not timed_out else TIMED_OUT,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=time.monotonic() - start,
        timed_out=timed_out,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group created for the still-running ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    """Pids of live processes in process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _kill_leftovers(pgid: int) -> None:
    """Kill processes our client left behind in the process group we created for it."""
    for pid in _group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InteropError(f"{tool!r} is not installed (see docs/specs/scep-clients.md)")
    return path


def _file_state(path: Path) -> tuple[int, int, bytes] | None:
    """(inode, mtime_ns, content) of a file, to tell whether a client rewrote it."""
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns, path.read_bytes()
    except OSError:
        return None


def _fresh_dir(workdir: Path) -> Path:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


# ---------------------------------------------------------------------------------------
# Certificates and SANs
# ---------------------------------------------------------------------------------------


def load_certificate(path: Path) -> x509.Certificate | None:
    """Load the first certificate from a PEM or DER file; None if absent or unparsable."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def split_san(san: str) -> tuple[str, str]:
    """Classify a SAN in the harness syntax into ``(kind, value)``.

    ``kind`` is one of ``dns``, ``email``, ``ip``, ``principal`` or ``uri``.
    """
    prefix, sep, rest = san.partition(":")
    if sep and prefix.lower() in ("dns", "email", "ip", "principal", "uri"):
        return prefix.lower(), rest
    try:
        ipaddress.ip_address(san)
    except ValueError:
        pass
    else:
        return "ip", san
    if "@" in san:
        return "email", san
    return "dns", san


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _issued(issuer: x509.Certificate, subject: x509.Certificate) -> bool:
    return issuer is not subject and issuer.subject == subject.issuer


@dataclass(frozen=True)
class CaCertChoice:
    """Which of the GetCACert certificates a client should use for what."""

    encryption: Path  # recipient of the pkcsPKIEnvelope (RA if there is one, else the CA)
    signature: Path  # verifies the CertRep signature (RA if there is one, else the CA)
    others: tuple[Path, ...]  # the remaining certificates, for chain building


def classify_ca_certs(paths: Sequence[Path]) -> CaCertChoice:
    """Pick the encryption and signature certificates out of a GetCACert result.

    If there are non-CA (RA) certificates, the RA with ``keyEncipherment`` is used for
    encryption and the RA with ``digitalSignature`` for signature checks (an RA without
    a KeyUsage extension fits both; if none fits, the first RA is used). Otherwise the
    issuing CA is used for both: the CA certificate that issued no other CA certificate
    in the set, i.e. the sub-CA in a root + sub-CA chain.
    """
    certs: list[tuple[Path, x509.Certificate]] = []
    for p in paths:
        cert = load_certificate(p)
        if cert is None:
            raise InteropError(f"cannot parse CA/RA certificate file {p}")
        certs.append((p, cert))
    if not certs:
        raise InteropError("GetCACert returned no certificates")

    ras = [(p, c) for p, c in certs if not _is_ca(c)]
    cas = [(p, c) for p, c in certs if _is_ca(c)]
    if ras:

        def pick(usage: str) -> Path:
            for p, c in ras:
                ku = _key_usage(c)
                if ku is None or getattr(ku, usage):
                    return p
            return ras[0][0]

        enc, sig = pick("key_encipherment"), pick("digital_signature")
    else:
        leaf_cas = [(p, c) for p, c in cas if not any(_issued(c, o) for _, o in cas)]
        enc = sig = (leaf_cas or cas)[0][0]
    others = tuple(p for p, _ in certs if p not in (enc, sig))
    return CaCertChoice(encryption=enc, signature=sig, others=others)


# ---------------------------------------------------------------------------------------
# micromdm scepclient
# ---------------------------------------------------------------------------------------


def enrol_scepclient(
    url: str,
    workdir: Path,
    *,
    challenge: str,
    cn: str,
    key_size: int = 2048,
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    renew_cert: Path | None = None,
    renew_key: Path | None = None,
) -> EnrolResult:
    """Enrol with micromdm ``scepclient`` (2.1.0).

    Runs ``scepclient -private-key key.pem -certificate client.pem -server-url URL
    -challenge ... -cn CN -keySize N -debug`` in ``workdir``. The client generates
    ``key.pem`` and ``csr.pem`` there and writes the issued certificate to
    ``client.pem``.

    scepclient does GetCACert, then GetCACaps, then PKIOperation (POST if the server
    advertises ``POSTPKIOperation``/``SCEPStandard``). It uses single-DES and SHA-1
    whatever the server advertises. On PENDING it re-sends the same PKCSReq every 30 s
    and never polls with CertPoll, so a pending request runs until ``timeout`` kills it.

    Renewal: pass ``renew_cert`` and ``renew_key`` (an issued certificate and its key).
    They are copied into ``workdir`` as ``client.pem``/``key.pem``; scepclient then
    sends a RenewalReq signed with the old certificate, for the same key. The new
    certificate replaces ``client.pem``.

    ``extra_args`` are appended, e.g. ``("-organization", "acme", "-ou", "")``. The
    defaults add ``C=US, O=scep-client, OU=MDM`` to the subject.
    """
    exe = _require("scepclient")
    workdir = _fresh_dir(workdir)
    key_path = workdir / "key.pem"
    cert_path = workdir / "client.pem"
    if (renew_cert is None) != (renew_key is None):
        raise ValueError("renew_cert and renew_key go together")
    if renew_cert is not None and renew_key is not None:
        shutil.copyfile(renew_key, key_path)
        shutil.copyfile(renew_cert, cert_path)
    before = _file_state(cert_path)

    tr = _Transcript(deadline=time.monotonic() + timeout)
    argv = [
        exe,
        "-private-key",
        str(key_path),
        "-certificate",
        str(cert_path),
        "-server-url",
        url,
        "-challenge",
        challenge,
        "-cn",
        cn,
        "-keySize",
        str(key_size),
        "-debug",
        *extra_args,
    ]
    step = tr.run(argv, cwd=workdir)
    cert = None
    if cert_path.exists() and _file_state(cert_path) != before:
        # Written by this run. A renewal may legitimately bring back the same bytes
        # (e.g. a server answering a repeated transactionID with the cert it issued).
        cert = load_certificate(cert_path)
    return EnrolResult(
        client=SCEPCLIENT,
        returncode=step.returncode,
        certificate=cert,
        key_path=key_path,
        stdout=tr.stdout(),
        stderr=tr.stderr(),
        workdir=workdir,
    )


# ---------------------------------------------------------------------------------------
# strongSwan pki
# ---------------------------------------------------------------------------------------

_SCEPCA_DIR = "scepca"


def _scepca(url: str, outdir: Path, tr: _Transcript) -> tuple[_Step, list[Path]]:
    exe = _require("pki")
    outdir.mkdir(parents=True, exist_ok=True)
    before = set(outdir.iterdir())
    step = tr.run(
        [
            exe,
            "--scepca",
            "--url",
            url,
            "--caout",
            str(outdir / "caCert.der"),
            "--raout",
            str(outdir / "raCert.der"),
            "--outform",
            "der",
            "--force",
        ],
        cwd=outdir,
    )
    written = sorted(p for p in outdir.iterdir() if p not in before and p.is_file())
    return step, written


def fetch_ca_certs_strongswan(url: str, workdir: Path, *, timeout: float = 30) -> list[Path]:
    """Fetch the CA/RA certificates with ``pki --scepca`` and return the files written.

    Files go to ``workdir/scepca/``, DER encoded, named by strongSwan's own scheme from
    the ``--caout caCert.der --raout raCert.der`` templates:

    * root CA: ``caCert.der``. If there are several roots, the first is ``caCert.der``
      and the n-th (n >= 2) is ``caCert-root-<n>.der``.
    * intermediate (sub) CAs, always numbered: ``caCert-1.der``, ``caCert-2.der``, ...
    * RA (non-CA) certificates: ``raCert.der``, then ``raCert-2.der``, ``raCert-3.der``, ...

    A plain ``application/x-x509-ca-cert`` answer (one certificate) gives ``caCert.der``.

    Raises:
        InteropError: if ``pki`` fails or writes no file.
    """
    workdir = _fresh_dir(workdir)
    tr = _Transcript(deadline=time.monotonic() + timeout)
    step, files = _scepca(url, workdir / _SCEPCA_DIR, tr)
    if step.returncode != 0 or not files:
        raise InteropError(
            f"pki --scepca failed (exit {step.returncode})",
            stdout=tr.stdout(),
            stderr=tr.stderr(),
        )
    return files


def _strongswan_san(san: str) -> str:
    kind, value = split_san(san)
    if kind in ("dns", "email"):
        return f"{kind}:{value}"
    if kind == "ip":
        # strongSwan silently drops "ip:ADDR"; a bare address is recognised.
        return value
    raise ValueError(f"strongSwan pki --scep cannot request a {kind} SAN ({san!r})")


def enrol_strongswan(
    url: str,
    workdir: Path,
    *,
    challenge: str,
    dn: str,
    sans: Sequence[str] = (),
    cipher: str = "aes",
    digest: str = "sha256",
    timeout: float = 60,
    renew_cert: Path | None = None,
    renew_key: Path | None = None,
    poll_interval: int | None = None,
    max_poll_time: int | None = None,
    rsa_padding: str = "pkcs1",
) -> EnrolResult:
    """Enrol with strongSwan ``pki --scep`` (5.9.8).

    Steps, all in ``workdir``:

    1. ``pki --scepca`` (see :func:`fetch_ca_certs_strongswan`). The encryption and
       signature certificates are chosen by :func:`classify_ca_certs`, so an RA is used
       for ``--cacert-enc``/``--cacert-sig`` when there is one and the CA otherwise. The
       rest are passed as ``--cacert``.
    2. ``pki --gen --type rsa --size 2048 --outform pem`` writes a new key, ``key.pem``.
    3. ``pki --scep --url URL --in key.pem --dn DN [--san ...] --password CHALLENGE
       --cacert-enc ... --cacert-sig ... --cipher C --digest D --outform pem``. The issued
       certificate goes to stdout and is saved as ``cert.pem``.

    ``dn`` uses strongSwan syntax, e.g. ``"C=US, O=test, CN=dev1"``. Each SAN becomes one
    ``--san``. Renewal: ``renew_cert``/``renew_key`` are passed as ``--cert``/``--key``.
    strongSwan then sends a RenewalReq (messageType 17) for the new key, signed with the
    old certificate. ``poll_interval``/``max_poll_time`` map to ``--interval`` and
    ``--maxpolltime``. On PENDING strongSwan polls with CertPoll, every 60 s by default.
    ``rsa_padding`` maps to ``--rsa-padding``: ``"pss"`` signs the pkiMessage (SignerInfo
    ``rsassaPss`` with explicit parameters) and the self-signed certificate with RSASSA-PSS.

    Known 5.9.8 bugs (``docs/specs/scep-clients.md``, "strongSwan pki"): its GetCACaps
    checks test enum indexes as bit masks. The default ``cipher="aes"`` fails unless the
    server also advertises ``DES3`` ("AES_CBC encryption algorithm not supported by CA").
    It accepts only ``rsaEncryption`` as the SignerInfo signature algorithm of a CertRep.
    """
    pki = _require("pki")
    workdir = _fresh_dir(workdir)
    key_path = workdir / "key.pem"
    cert_path = workdir / "cert.pem"
    if (renew_cert is None) != (renew_key is None):
        raise ValueError("renew_cert and renew_key go together")
    san_args = [a for s in sans for a in ("--san", _strongswan_san(s))]

    tr = _Transcript(deadline=time.monotonic() + timeout)

    def result(step: _Step, cert: x509.Certificate | None = None) -> EnrolResult:
        return EnrolResult(
            client=STRONGSWAN,
            returncode=step.returncode,
            certificate=cert,
            key_path=key_path,
            stdout=tr.stdout(),
            stderr=tr.stderr(),
            workdir=workdir,
        )

    step, files = _scepca(url, workdir / _SCEPCA_DIR, tr)
    if step.returncode != 0 or not files:
        return result(step if step.returncode != 0 else _failed(step))
    choice = classify_ca_certs(files)

    step = tr.run(
        [pki, "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"], cwd=workdir
    )
    if step.returncode != 0:
        return result(step)
    key_path.write_text(step.stdout)
    key_path.chmod(0o600)

    argv = [
        pki,
        "--scep",
        "--url",
        url,
        "--in",
        str(key_path),
        "--dn",
        dn,
        *san_args,
        "--cacert-enc",
        str(choice.encryption),
        "--cacert-sig",
        str(choice.signature),
        *[a for p in choice.others for a in ("--cacert", str(p))],
        "--cipher",
        cipher,
        "--digest",
        digest,
        "--rsa-padding",
        rsa_padding,
        "--outform",
        "pem",
        "--debug",
        "2",
    ]
    if challenge:
        argv += ["--password", challenge]
    if renew_cert is not None and renew_key is not None:
        argv += ["--cert", str(Path(renew_cert).resolve()), "--key", str(Path(renew_key).resolve())]
    if poll_interval is not None:
        argv += ["--interval", str(poll_interval)]
    if max_poll_time is not None:
        argv += ["--maxpolltime", str(max_poll_time)]
    step = tr.run(argv, cwd=workdir)
    cert = None
    if step.returncode == 0 and "-----BEGIN CERTIFICATE-----" in step.stdout:
        cert_path.write_text(step.stdout)
        cert = load_certificate(cert_path)
    return result(step, cert)


def _failed(step: _Step) -> _Step:
    """A copy of a step that exited 0 without doing its job, marked as failed."""
    return _Step(
        argv=step.argv,
        returncode=1,
        stdout=step.stdout,
        stderr=step.stderr + "\n[harness] no output files written\n",
        seconds=step.seconds,
        timed_out=False,
    )


# ---------------------------------------------------------------------------------------
# certmonger
# ---------------------------------------------------------------------------------------

_CM_CA = "SCEPLINE"
_CM_REQ = "interop"
# States in which certmonger will not get further without outside help.
_CM_FAILED_STATES = ("CA_UNREACHABLE", "CA_REJECTED", "NEED_GUIDANCE", "CA_UNCONFIGURED")


def _certmonger_daemon() -> str:
    # Debian ships a session-mode build that keeps its state under $HOME/.config; the
    # system build (/usr/sbin/certmonger) uses /var/lib/certmonger even with -s when run
    # as root. Both honour the CERTMONGER_*_DIR variables set in enrol_certmonger.
    session = Path("/usr/lib/certmonger/certmonger-session")
    if session.exists():
        return str(session)
    return _require("certmonger")


def _certmonger_san_args(sans: Sequence[str]) -> list[str]:
    flags = {"dns": "-D", "email": "-E", "ip": "-A", "principal": "-K"}
    args: list[str] = []
    for san in sans:
        kind, value = split_san(san)
        if kind not in flags:
            raise ValueError(f"certmonger cannot request a {kind} SAN ({san!r})")
        args += [flags[kind], value]
    return args


def enrol_certmonger(
    url: str,
    workdir: Path,
    *,
    challenge: str,
    subject: str,
    sans: Sequence[str] = (),
    timeout: float = 90,
    renew: bool = False,
    signing_ca: Path | None = None,
) -> EnrolResult:
    """Enrol with certmonger (0.79.17), using a private daemon that is stopped at the end.

    Runs ``dbus-run-session -- certmonger-session -s -n -d 1 -p PIDFILE -c DRIVER``.
    ``HOME`` and the ``CERTMONGER_*_DIR`` variables point into ``workdir/home``, so the
    daemon's CA and request state stays private. DRIVER is this file run as a script
    inside the session. It does:

    1. ``getcert add-scep-ca -s -c SCEPLINE -u URL [-N signing_ca]``, then waits (up to
       15 s) until the daemon has stored the CA's GetCACaps and GetCACert answers.
    2. ``getcert request -s -c SCEPLINE -I interop -k key.pem -f cert.pem -L CHALLENGE
       -N SUBJECT [SAN flags] -w --wait-timeout T -v``. ``subject`` is certmonger
       syntax, e.g. ``"CN=dev1,O=test"``. SANs map to ``-D`` (dns), ``-E`` (email),
       ``-A`` (ip) and ``-K`` (principal). certmonger generates ``key.pem`` (RSA 2048).
       If the answer was PENDING (status CA_WORKING), ``getcert refresh`` until the CA
       decides (see below).
    3. If ``renew``: keep the first certificate as ``cert-initial.pem``, run
       ``getcert resubmit -s -i interop -v``, and wait until certmonger has rewritten
       ``cert.pem`` and is back in MONITORING, or has reached a failure state. As
       observed, the renewal is a **PKCSReq** (messageType 19, not RenewalReq), even
       though ``Renewal`` is advertised. It is signed with the previously issued
       certificate and key and asks for the same key, so it has the same transactionID
       as the first request. The returned certificate is the one certmonger wrote then.
       It can be byte-identical to the first, if the server answers a repeated
       transactionID with the certificate it already issued.
    4. ``getcert list -s``, whose output goes into ``stdout`` (with every step's
       output). ``stderr`` is the daemon's debug log, which has the scep-submit helper's
       messages. The request's final ``status`` and ``ca-error`` are also returned as
       ``certmonger_status`` and ``certmonger_ca_error``.

    When the driver exits, the daemon exits too. Its pid file is then checked and a
    daemon still running is killed.

    ``signing_ca``: certmonger trusts only the CA certificate it knows as the *signing
    CA* when it checks a CertRep signature. If GetCACert returns a single certificate,
    certmonger keeps that one only as the RA/encryption certificate, so every response
    fails with "failed to verify signature on server response ... certificate verify
    error" (X509 error 18, self-signed certificate). Passing the CA certificate here
    (``getcert add-scep-ca -N``) supplies the trust anchor, as an administrator would.
    Leave it None to test what certmonger does by itself.

    PKIOperation goes over GET even when ``POSTPKIOperation`` is advertised; it uses
    AES-256-CBC if ``AES`` is advertised and SHA-256 if ``SHA-256`` is. On PENDING the
    request waits in CA_WORKING, and certmonger polls only a week later (a SCEP CA gives
    it no delay), by sending the same PKCSReq again (it builds a GetCertInitial but does
    not send it). The driver then runs ``getcert refresh -s -i interop`` every second
    (each makes it poll now) until the request is issued or rejected.
    """
    for tool in ("dbus-run-session", "getcert"):
        _require(tool)
    daemon = _certmonger_daemon()
    workdir = _fresh_dir(workdir)
    home = workdir / "home"
    state = home / ".config" / "certmonger"
    for d in (state / "requests", state / "cas", state / "local", state / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    key_path = workdir / "key.pem"
    cert_path = workdir / "cert.pem"
    pid_file = workdir / "certmonger.pid"
    spec_path = workdir / "certmonger-driver.json"
    result_path = workdir / "certmonger-result.json"

    tr = _Transcript(deadline=time.monotonic() + timeout)
    # Leave the daemon some seconds after the driver's own deadline to shut down.
    driver_budget = max(5.0, timeout - 5.0)
    spec = {
        "url": url,
        "ca": _CM_CA,
        "id": _CM_REQ,
        "key": str(key_path),
        "cert": str(cert_path),
        "challenge": challenge,
        "subject": subject,
        "san_args": _certmonger_san_args(sans),
        "renew": renew,
        "signing_ca": str(Path(signing_ca).resolve()) if signing_ca is not None else None,
        "deadline_seconds": driver_budget,
        "result": str(result_path),
        "cas_dir": str(state / "cas"),
    }
    spec_path.write_text(json.dumps(spec, indent=2))

    env = _client_env(
        {
            "HOME": str(home),
            "CERTMONGER_CONFIG_DIR": str(state),
            "CERTMONGER_REQUESTS_DIR": str(state / "requests"),
            "CERTMONGER_CAS_DIR": str(state / "cas"),
            "CERTMONGER_LOCAL_CA_DIR": str(state / "local"),
            "CERTMONGER_TMPDIR": str(state / "tmp"),
            "CERTMONGER_SYSTEM_LOCK_FILE": str(state / "system.lock"),
        }
    )
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    driver = _shell_join(
        [sys.executable, str(Path(__file__).resolve()), "--certmonger-driver", str(spec_path)]
    )
    argv = [
        "dbus-run-session",
        "--",
        daemon,
        "-s",
        "-n",
        "-d",
        "1",
        "-p",
        str(pid_file),
        "-c",
        driver,
    ]
    step = tr.run(argv, cwd=workdir, env=env)
    _stop_certmonger(pid_file)

    driver_log = ""
    returncode = step.returncode
    status = ca_error = ""
    try:
        outcome = json.loads(result_path.read_text())
    except (OSError, ValueError):
        outcome = None
        if returncode == 0:
            returncode = 1
        driver_log = "[harness] the certmonger driver wrote no result\n"
    if outcome is not None:
        driver_log = outcome["transcript"]
        status, ca_error = outcome["status"], outcome["ca_error"]
        if returncode == 0:
            returncode = int(outcome["returncode"])
    cert = load_certificate(cert_path) if returncode == 0 else None
    if returncode == 0 and cert is None:
        returncode = 1
    return EnrolResult(
        client=CERTMONGER,
        returncode=returncode,
        certificate=cert,
        key_path=key_path,
        stdout=driver_log + "\n" + tr.stdout(),
        stderr=tr.stderr(),
        workdir=workdir,
        certmonger_status=status,
        certmonger_ca_error=ca_error,
    )


def _stop_certmonger(pid_file: Path) -> None:
    """Kill our certmonger daemon if it outlived its session (it should not)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # already gone
    if b"certmonger" not in cmdline:
        return  # pid reused by something else: not ours
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(20):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _certmonger_driver(spec_path: str) -> int:
    """Run inside ``dbus-run-session``/``certmonger -c``; see :func:`enrol_certmonger`."""
    spec = json.loads(Path(spec_path).read_text())
    deadline = time.monotonic() + float(spec["deadline_seconds"])
    lines: list[str] = []

    def getcert(*args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        remaining = max(1.0, deadline - started)
        argv = ["getcert", *args]
        try:
            cp = subprocess.run(
                argv, capture_output=True, text=True, timeout=remaining, check=False
            )
        except subprocess.TimeoutExpired as exc:
            cp = subprocess.CompletedProcess(
                argv, TIMED_OUT, _text(exc.stdout), _text(exc.stderr) + "\n[driver] timed out\n"
            )
        if not quiet:
            shown = ["<challenge>" if a == spec["challenge"] else a for a in argv]
            took = time.monotonic() - started
            lines.append(
                f"$ {_shell_join(shown)}\n# exit {cp.returncode} after {took:.2f}s\n"
                f"{cp.stdout}{cp.stderr}"
            )
        return cp

    def request_field(name: str) -> str:
        out = getcert("list", "-s", "-i", spec["id"], quiet=True).stdout
        for line in out.splitlines():
            if line.strip().startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
        return ""

    def status() -> str:
        return request_field("status")

    rc = 0
    add = ["add-scep-ca", "-s", "-c", spec["ca"], "-u", spec["url"]]
    if spec["signing_ca"]:
        add += ["-N", spec["signing_ca"]]
    rc = getcert(*add).returncode
    if rc == 0:
        # The daemon fetches GetCACaps/GetCACert in the background after add-scep-ca.
        ready_by = min(deadline, time.monotonic() + 15)
        while not _certmonger_ca_ready(spec["cas_dir"], spec["ca"]):
            if time.monotonic() > ready_by:
                lines.append("[driver] CA data (caps/certs) still not fetched; going on\n")
                break
            time.sleep(0.1)
        getcert("list-cas", "-s", "-c", spec["ca"])

        wait = max(1, int(deadline - time.monotonic()) - 2)
        request = [
            "request",
            "-s",
            "-c",
            spec["ca"],
            "-I",
            spec["id"],
            "-k",
            spec["key"],
            "-f",
            spec["cert"],
            "-L",
            spec["challenge"],
            "-N",
            spec["subject"],
            *spec["san_args"],
            "-w",
            "--wait-timeout",
            str(wait),
            "-v",
        ]
        rc = getcert(*request).returncode
        if status() == "CA_WORKING":
            rc = _poll_pending(getcert, status, spec["id"], deadline, lines)
        cert = Path(spec["cert"])
        if rc == 0 and not cert.exists():
            rc = 1
        if rc == 0 and spec["renew"]:
            initial = _file_state(cert)
            cert.with_name("cert-initial.pem").write_bytes(cert.read_bytes())
            rc = getcert("resubmit", "-s", "-i", spec["id"], "-v").returncode
            renewed = False
            while rc == 0 and time.monotonic() < deadline:
                st = status()
                # Rewritten, not necessarily changed: a server may answer the renewal
                # (same key, so same transactionID) with the certificate it issued before.
                if _file_state(cert) != initial and st == "MONITORING":
                    renewed = True
                    break
                if st in _CM_FAILED_STATES:
                    break
                time.sleep(0.2)
            if rc == 0 and not renewed:
                rc = 1
                lines.append(f"[driver] renewal did not complete (status {status()!r})\n")
    getcert("list", "-s")
    outcome = {
        "returncode": rc,
        "transcript": "\n".join(lines),
        "status": status(),
        "ca_error": request_field("ca-error"),
    }
    Path(spec["result"]).write_text(json.dumps(outcome))
    return 0


def _poll_pending(
    getcert: Callable[..., subprocess.CompletedProcess[str]],
    status: Callable[[], str],
    request_id: str,
    deadline: float,
    lines: list[str],
) -> int:
    """Poll a PENDING request (CA_WORKING) until the CA decides; 0 once it is issued.

    certmonger polls by itself only a week later (it gets no delay from a SCEP CA);
    ``getcert refresh`` makes it poll now, as an administrator would.
    """
    lines.append("[driver] the CA answered PENDING; polling with getcert refresh\n")
    next_poll = 0.0
    while (current := status()) not in ("MONITORING", *_CM_FAILED_STATES):
        if time.monotonic() > deadline:
            break
        if current == "CA_WORKING" and time.monotonic() >= next_poll:
            getcert("refresh", "-s", "-i", request_id)
            next_poll = time.monotonic() + 1
        time.sleep(0.2)
    return 0 if current == "MONITORING" else 1


def _certmonger_ca_ready(cas_dir: str, ca: str) -> bool:
    """True once the daemon has stored the CA's capabilities and certificates."""
    for entry in Path(cas_dir).iterdir():
        try:
            text = entry.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if f"id={ca}\n" in text:
            return "ca_capabilities=" in text and "ca_encryption_cert=" in text
    return False


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--certmonger-driver":
        sys.exit(_certmonger_driver(sys.argv[2]))
    sys.exit(f"usage: {sys.argv[0]} --certmonger-driver SPEC.json (used by enrol_certmonger)")
