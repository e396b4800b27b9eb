"""The DNS records a domain publishes for MailboxKit, and their zone-file form.

Implementation notes:

- Pure: a `DomainProfile` (the domain, this host, its DKIM keys, the outbound transport, report
  addresses) in, a tuple of `DnsRecord` out. The CLI prints them, `dns.check` compares them with
  live DNS, and the API can serve them as they are.
- Names are absolute, lower case, without the final dot. Host names inside values (MX, CNAME
  and SRV targets) end with "." as zone files and most DNS hosting panels take them.
- A TXT value is the text itself. In zone-file form it is cut into character-strings of at most
  255 octets (RFC 1035 §3.3.14); SPF (RFC 7208 §3.3), DKIM (RFC 6376 §3.6.2.2), DMARC, MTA-STS
  and TLS-RPT readers join them again. Inside the quotes `"` and `\\` are escaped and octets
  outside printable ASCII become `\\DDD` (RFC 1035 §5.1).
- Required records make mail work and pass DMARC: MX (RFC 5321 §5.1), SPF `v=spf1 mx -all`
  with include:amazonses.com when SES sends (RFC 7208), DKIM per selector (RFC 6376 §3.6.1,
  RFC 8463), DMARC p=quarantine with rua (RFC 7489 §6.3), and for SES with a custom MAIL FROM
  domain its MX and SPF, so the bounce domain aligns. Recommended ones make it better: the
  external report authorization when rua is in another organizational domain (RFC 7489 §7.1),
  MTA-STS (RFC 8461) with an id derived from the policy text, so it changes exactly when the
  policy does, and its policy host; TLS-RPT (RFC 8460 §3); SRV for IMAP and submission
  (RFC 6186, implicit TLS preferred by RFC 8314 §5.1); the autoconfig host for Thunderbird.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from xml.sax.saxutils import escape

from mailboxkit.config import Settings
from mailboxkit.dns.dmarc import organizational_domain
from mailboxkit.dns.resolver import is_queryable

__all__ = [
    "DEFAULT_TTL",
    "DnsRecord",
    "DomainProfile",
    "MtaStsMode",
    "OutboundTransport",
    "PublishedKey",
    "RecordPurpose",
    "RecordType",
    "ServicePorts",
    "autoconfig_xml",
    "domain_records",
    "mta_sts_id",
    "mta_sts_policy",
    "normalize_domain",
    "operator_notes",
    "records_table",
    "txt_strings",
    "zone_fragment",
]

DEFAULT_TTL = 3600
TXT_STRING_MAX = 255  # octets in one character-string, RFC 1035 §3.3
MX_PREFERENCE = 10
SRV_WEIGHT = 1
SES_SPF_INCLUDE = "amazonses.com"
MTA_STS_ID_LENGTH = 20  # RFC 8461 §3.1 allows 1 to 32 letters and digits


class RecordType(StrEnum):
    MX = "MX"
    TXT = "TXT"
    CNAME = "CNAME"
    SRV = "SRV"


class RecordPurpose(StrEnum):
    """What a record is for; `dns.check` picks its comparison by it."""

    MX = "mx"
    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    DMARC_REPORT = "dmarc-report"  # RFC 7489 §7.1 external destination authorization
    MAIL_FROM_MX = "mail-from-mx"  # SES custom MAIL FROM domain
    MAIL_FROM_SPF = "mail-from-spf"
    MTA_STS = "mta-sts"
    MTA_STS_HOST = "mta-sts-host"
    TLS_RPT = "tls-rpt"
    SERVICE = "service"  # RFC 6186 SRV
    AUTOCONFIG = "autoconfig"
    # Checked but published at the host's provider, not in the domain's zone:
    MX_HOST = "mx-host"  # A/AAAA of the MX target
    PTR = "ptr"  # reverse DNS of those addresses
    MTA_STS_POLICY = "mta-sts-policy"  # the policy file served over HTTPS (RFC 8461 §3.3)


class OutboundTransport(StrEnum):
    MX = "mx"
    SMARTHOST = "smarthost"
    SES = "ses"


class MtaStsMode(StrEnum):
    """RFC 8461 §5."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A DKIM selector and the text of its key record (RFC 6376 §3.6.1)."""

    selector: str
    txt: str


@dataclass(frozen=True, slots=True)
class ServicePorts:
    """The ports clients are told about (SRV, autoconfig); 0 means the service is off."""

    imaps: int = 993
    imap: int = 143
    submissions: int = 465
    submission: int = 587


@dataclass(frozen=True, slots=True)
class DomainProfile:
    """Everything the records of one domain depend on. Names are normalized already."""

    domain: str
    hostname: str
    dkim: tuple[PublishedKey, ...] = ()
    transport: OutboundTransport = OutboundTransport.MX
    ses_region: str = "us-east-1"
    ses_mail_from: str = ""  # the custom MAIL FROM domain (bounce.example.com), or ""
    dmarc_rua: str = ""  # an address; empty: dmarc-reports@domain
    tlsrpt_rua: str = ""  # an address; empty: tls-reports@domain
    mta_sts_mode: MtaStsMode = MtaStsMode.TESTING
    mta_sts_max_age: int = 604800
    ports: ServicePorts = field(default_factory=ServicePorts)
    ttl: int = DEFAULT_TTL

    @classmethod
    def from_settings(
        cls, settings: Settings, domain: str, dkim: Sequence[PublishedKey] = ()
    ) -> DomainProfile:
        domain = normalize_domain(domain)
        transport = OutboundTransport(settings.outbound_transport)
        mail_from = ""
        if transport is OutboundTransport.SES and settings.ses_mail_from_subdomain:
            mail_from = f"{settings.ses_mail_from_subdomain}.{domain}"
        return cls(
            domain=domain,
            hostname=normalize_domain(settings.hostname),
            dkim=tuple(dkim),
            transport=transport,
            ses_region=settings.ses_region,
            ses_mail_from=mail_from,
            dmarc_rua=settings.dmarc_rua,
            tlsrpt_rua=settings.tlsrpt_rua,
            mta_sts_mode=MtaStsMode(settings.mta_sts_mode),
            mta_sts_max_age=settings.mta_sts_max_age,
            ports=ServicePorts(
                imaps=settings.imaps_port,
                imap=settings.imap_port,
                submissions=settings.submissions_port,
                submission=settings.submission_port,
            ),
            ttl=settings.dns_record_ttl,
        )

    @property
    def dmarc_address(self) -> str:
        return self.dmarc_rua or f"dmarc-reports@{self.domain}"

    @property
    def tlsrpt_address(self) -> str:
        return self.tlsrpt_rua or f"tls-reports@{self.domain}"


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One record as entered at a DNS host. TXT `value` is the unquoted text."""

    name: str
    type: RecordType
    value: str
    ttl: int
    purpose: RecordPurpose
    required: bool = True
    note: str = ""


def normalize_domain(name: str) -> str:
    """Lower case, no final dot, IDNA A-labels; ValueError if it cannot be a DNS name."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name!r} is not a valid domain name") from None
    if not is_queryable(name) or any(c.isspace() or c in "@/\\\"'" for c in name):
        raise ValueError(f"{name!r} is not a valid domain name")
    return name


def domain_records(profile: DomainProfile) -> tuple[DnsRecord, ...]:
    """Every record `profile.domain` should publish, required ones first."""
    d, ttl, target = profile.domain, profile.ttl, f"{profile.hostname}."
    records = [
        DnsRecord(d, RecordType.MX, f"{MX_PREFERENCE} {target}", ttl, RecordPurpose.MX),
        DnsRecord(d, RecordType.TXT, _spf_value(profile), ttl, RecordPurpose.SPF),
    ]
    records += [
        DnsRecord(f"{k.selector}._domainkey.{d}", RecordType.TXT, k.txt, ttl, RecordPurpose.DKIM)
        for k in profile.dkim
    ]
    dmarc = f"v=DMARC1; p=quarantine; rua=mailto:{profile.dmarc_address}"
    records.append(DnsRecord(f"_dmarc.{d}", RecordType.TXT, dmarc, ttl, RecordPurpose.DMARC))
    if profile.ses_mail_from:
        feedback = f"{MX_PREFERENCE} feedback-smtp.{profile.ses_region}.amazonses.com."
        note = "SES custom MAIL FROM domain: bounces and SPF alignment"
        records += [
            DnsRecord(
                profile.ses_mail_from,
                RecordType.MX,
                feedback,
                ttl,
                RecordPurpose.MAIL_FROM_MX,
                note=note,
            ),
            DnsRecord(
                profile.ses_mail_from,
                RecordType.TXT,
                f"v=spf1 include:{SES_SPF_INCLUDE} -all",
                ttl,
                RecordPurpose.MAIL_FROM_SPF,
                note=note,
            ),
        ]
    records += _recommended(profile)
    return tuple(records)


def _spf_value(profile: DomainProfile) -> str:
    terms = ["v=spf1", "mx"]
    if profile.transport is OutboundTransport.SES:
        terms.append(f"include:{SES_SPF_INCLUDE}")
    return " ".join([*terms, "-all"])


def _recommended(profile: DomainProfile) -> list[DnsRecord]:
    d, ttl, target = profile.domain, profile.ttl, f"{profile.hostname}."

    def record(
        name: str, rtype: RecordType, value: str, purpose: RecordPurpose, note: str = ""
    ) -> DnsRecord:
        return DnsRecord(name, rtype, value, ttl, purpose, required=False, note=note)

    records = []
    report_domain = profile.dmarc_address.rpartition("@")[2].lower()
    if organizational_domain(report_domain) != organizational_domain(d):
        records.append(
            record(
                f"{d}._report._dmarc.{report_domain}",
                RecordType.TXT,
                "v=DMARC1",
                RecordPurpose.DMARC_REPORT,
                f"in the zone of {report_domain}: lets it receive {d}'s DMARC reports",
            )
        )
    sts_id = mta_sts_id(mta_sts_policy(profile))
    records += [
        record(f"_mta-sts.{d}", RecordType.TXT, f"v=STSv1; id={sts_id}", RecordPurpose.MTA_STS),
        record(
            f"mta-sts.{d}",
            RecordType.CNAME,
            target,
            RecordPurpose.MTA_STS_HOST,
            f"serves https://mta-sts.{d}/.well-known/mta-sts.txt; "
            f"the TLS certificate must name mta-sts.{d}",
        ),
        record(
            f"_smtp._tls.{d}",
            RecordType.TXT,
            f"v=TLSRPTv1; rua=mailto:{profile.tlsrpt_address}",
            RecordPurpose.TLS_RPT,
        ),
    ]
    services = (
        ("_submissions._tcp", 0, profile.ports.submissions),
        ("_submission._tcp", 10, profile.ports.submission),
        ("_imaps._tcp", 0, profile.ports.imaps),
        ("_imap._tcp", 10, profile.ports.imap),
    )
    records += [
        record(
            f"{service}.{d}",
            RecordType.SRV,
            f"{priority} {SRV_WEIGHT} {port} {target}",
            RecordPurpose.SERVICE,
        )
        for service, priority, port in services
        if port
    ]
    records.append(
        record(
            f"autoconfig.{d}",
            RecordType.CNAME,
            target,
            RecordPurpose.AUTOCONFIG,
            f"serves https://autoconfig.{d}/mail/config-v1.1.xml to Thunderbird",
        )
    )
    return records


def operator_notes(profile: DomainProfile) -> tuple[str, ...]:
    """What the records alone do not cover, in one sentence each."""
    host, d = profile.hostname, profile.domain
    notes = [
        f"{host} needs A/AAAA records with this server's public addresses, and the reverse "
        f"DNS (PTR) of each must be {host} (set at the hosting provider).",
    ]
    if profile.transport is OutboundTransport.SMARTHOST:
        notes.append("SPF: add the relay's mechanism (e.g. include:...) its provider documents.")
    if profile.transport is OutboundTransport.SES:
        notes.append(f"SES: verify {d} as an identity in SES (its own DKIM CNAMEs come from SES).")
    if not profile.dmarc_rua:
        notes.append(f"DMARC reports go to {profile.dmarc_address}: create that inbox for them.")
    if not profile.tlsrpt_rua:
        notes.append(f"TLS reports go to {profile.tlsrpt_address}: create that inbox for them.")
    return tuple(notes)


def mta_sts_policy(profile: DomainProfile) -> str:
    """The policy served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.2)."""
    fields = (
        ("version", "STSv1"),
        ("mode", str(profile.mta_sts_mode)),
        ("mx", profile.hostname),
        ("max_age", str(profile.mta_sts_max_age)),
    )
    return "".join(f"{key}: {value}\r\n" for key, value in fields)


def mta_sts_id(policy: str) -> str:
    """A policy id (RFC 8461 §3.1) that changes whenever the policy text does."""
    return hashlib.sha256(policy.encode()).hexdigest()[:MTA_STS_ID_LENGTH]


def autoconfig_xml(profile: DomainProfile) -> str:
    """Thunderbird's autoconfig file (config-v1.1) for the domain's addresses."""
    d, host = escape(profile.domain), escape(profile.hostname)
    servers = (
        ("incomingServer", "imap", profile.ports.imaps, "SSL"),
        ("incomingServer", "imap", profile.ports.imap, "STARTTLS"),
        ("outgoingServer", "smtp", profile.ports.submissions, "SSL"),
        ("outgoingServer", "smtp", profile.ports.submission, "STARTTLS"),
    )
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f'  <emailProvider id="{d}">',
        f"    <domain>{d}</domain>",
        f"    <displayName>{d}</displayName>",
        f"    <displayShortName>{d}</displayShortName>",
    ]
    for element, kind, port, socket_type in servers:
        if not port:
            continue
        lines += [
            f'    <{element} type="{kind}">',
            f"      <hostname>{host}</hostname>",
            f"      <port>{port}</port>",
            f"      <socketType>{socket_type}</socketType>",
            "      <username>%EMAILADDRESS%</username>",
            "      <authentication>password-cleartext</authentication>",
            f"    </{element}>",
        ]
    lines += ["  </emailProvider>", "</clientConfig>", ""]
    return "\n".join(lines)


def txt_strings(text: str) -> list[str]:
    """`text` as zone-file character-strings: quoted, escaped, at most 255 octets each."""
    data = text.encode()
    chunks = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]
    return [f'"{_escape(chunk)}"' for chunk in chunks]


def _escape(chunk: bytes) -> str:
    out = []
    for octet in chunk:
        if octet in b'"\\':
            out.append("\\" + chr(octet))
        elif 0x20 <= octet < 0x7F:
            out.append(chr(octet))
        else:
            out.append(f"\\{octet:03d}")
    return "".join(out)


def _relative(name: str, origin: str) -> str | None:
    """`name` relative to `origin` ("@" for the apex), or None when outside the zone."""
    if name == origin:
        return "@"
    if name.endswith("." + origin):
        return name[: -len(origin) - 1]
    return None


def zone_fragment(records: Sequence[DnsRecord], origin: str, notes: Sequence[str] = ()) -> str:
    """BIND master-file lines (RFC 1035 §5) for `records` in the zone `origin`.

    Records outside the zone (the DMARC report authorization) are given as comments.
    """
    lines = [f"; MailboxKit records for {origin}", f"$ORIGIN {origin}."]
    lines += [f"; {note}" for note in notes]
    inside = [(r, _relative(r.name, origin)) for r in records]
    width = max((len(rel) for _, rel in inside if rel is not None), default=1)
    for record, rel in inside:
        if rel is None:
            lines.append(f"; {record.note or 'in another zone'}:")
            lines.append(f";   {record.name}. {record.ttl} IN {record.type} {_rdata(record)}")
            continue
        head = f"{rel:<{width}} {record.ttl:>6} IN {record.type:<5} "
        strings = txt_strings(record.value) if record.type is RecordType.TXT else []
        if len(strings) <= 1:
            lines.append(head + _rdata(record))
            continue
        pad = " " * (len(head) + 2)
        lines.append(f"{head}( {strings[0]}")
        lines += [pad + s for s in strings[1:-1]]
        lines.append(f"{pad}{strings[-1]} )")
    return "\n".join(lines) + "\n"


def _rdata(record: DnsRecord) -> str:
    if record.type is RecordType.TXT:
        return " ".join(txt_strings(record.value))
    return record.value


def records_table(records: Sequence[DnsRecord], notes: Sequence[str] = ()) -> str:
    """The records as typed into a DNS hosting panel: name, TTL, type, value (TXT unquoted)."""
    width = max((len(r.name) for r in records), default=4)
    lines: list[str] = []
    for required, title in ((True, "required"), (False, "recommended")):
        group = [r for r in records if r.required is required]
        if not group:
            continue
        lines.append(f"; {title}")
        lines += [f"{r.name:<{width}}  {r.ttl:<6} {r.type:<5}  {r.value}" for r in group]
    lines += [f"; {note}" for note in notes]
    return "\n".join(lines) + "\n"
