"""TLS server contexts for the mail listeners, reloadable, and the self-signed fallback.

Implementation notes:

- Every listener and STARTTLS upgrade (SMTP MX, submission 587 and 465, IMAP 143 and 993) gets
  the one *listener context* of ``ServerCertificate``. Its SNI callback, which OpenSSL calls for
  every ClientHello (with or without a server name), puts the newest context on the connection
  (``SSLObject.context``), so a reloaded certificate serves every new handshake, including those
  of listeners made with ``ssl=`` at start, while sessions already up keep theirs.
- A reload builds a whole new context from the files; an invalid pair (unreadable, mismatched,
  not PEM) is logged and the previous context stays. SIGHUP reloads (``cli.py``); besides, on a
  handshake at most every ``check_interval`` seconds, the files' stat (mtime, size, inode) is
  compared with the last one seen, and a change reloads: a renewal that replaces the key and then
  the certificate is at worst refused once (mismatch) and loaded at the next look.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


def self_signed(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """A certificate for ``hostname`` in ``data_dir``, made on first use and kept."""
    cert_path, key_path = data_dir / "tls" / "self-signed.crt", data_dir / "tls" / "self-signed.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "event=tls_self_signed cert=%s: no TLS certificate configured; clients will not trust "
        "this one. Set MAILBOXKIT_TLS_CERT_FILE and MAILBOXKIT_TLS_KEY_FILE for production.",
        cert_path,
    )
    return cert_path, key_path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, no client certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


_Stamp = tuple[tuple[int, int, int, int], ...] | None


def _stamp(*paths: Path) -> _Stamp:
    """What changes when a file is written or replaced; None if one is missing."""
    try:
        return tuple(
            (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev) for st in map(os.stat, paths)
        )
    except OSError:
        return None


def _not_after(cert_file: Path) -> str:
    """The first certificate's expiry, for the log."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return "unknown"
    return cert.not_valid_after_utc.isoformat()


class ServerCertificate:
    """The certificate and key the mail listeners serve, reloadable without a restart.

    ``context`` is the one context to give every listener and STARTTLS (see the module notes).
    The first load raises (a server must not start without its certificate); later ones log.
    """

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        check_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._check_interval = check_interval
        self._clock = clock
        self._seen = _stamp(cert_file, key_file)
        self._next_check = clock() + check_interval
        self.context = server_context(cert_file, key_file)
        self.context.sni_callback = self._select
        self._current = self.context

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes get."""
        return self._current

    def reload(self) -> bool:
        """Load the files again; True if new handshakes now use them."""
        self._seen = _stamp(self.cert_file, self.key_file)
        try:
            context = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            log.warning(
                "event=tls_reload_failed cert=%s key=%s error=%r: the previous certificate "
                "stays in use",
                self.cert_file,
                self.key_file,
                error,
            )
            return False
        self._current = context
        log.info(
            "event=tls_reloaded cert=%s not_after=%s", self.cert_file, _not_after(self.cert_file)
        )
        return True

    def check(self) -> None:
        """Reload if the files changed since last seen (looks at most every check_interval)."""
        if self._check_interval <= 0:
            return
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._check_interval
        if _stamp(self.cert_file, self.key_file) != self._seen:
            self.reload()

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        """SNI callback: OpenSSL calls it on every ClientHello; hand over the newest context."""
        try:
            self.check()
        except Exception:  # never fail a handshake over the look at the files
            log.exception("event=tls_check_failed cert=%s", self.cert_file)
        if sslobj.context is not self._current:
            sslobj.context = self._current
