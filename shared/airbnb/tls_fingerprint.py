"""A TLS ClientHello as tshark dissects it, its JA4 fingerprint, and Chrome's reference.

Pure code (no I/O): ``benchmarks/client_hello.py`` captures the fetcher's handshake
on the loopback and feeds tshark's fields here; the unit tests feed published values.

Why: Airbnb's bot manager (Akamai) scores the TLS handshake of every connection. A
ClientHello that is not a browser's (Python's OpenSSL, say) is a flag before any
header is read. The fetcher's client impersonates Chrome through curl_cffi, and this
module is how we check, from the bytes on the wire, that it does.

JA4 (FoxIO, https://github.com/FoxIO-LLC/ja4, technical_details/JA4.md) in short::

    t 13 d 15 16 h2 _ 8daaf6152771 _ e5627efa2ab1
    | |  | |  |  |    |              sha256[:12] of sorted extensions (no SNI, no ALPN)
    | |  | |  |  |    |              + "_" + signature algorithms in wire order
    | |  | |  |  |    sha256[:12] of the sorted cipher suites
    | |  | |  |  first and last character of the first ALPN value ("00": none)
    | |  | |  extension count (SNI and ALPN included)
    | |  | cipher suite count
    | |  "d": SNI present, "i": absent (a connection to an IP address sends none)
    | TLS version: highest of supported_versions, else the legacy version
    "t": TLS over TCP

GREASE values (RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa) are left out everywhere;
counts above 99 print 99; values are 4 lowercase hex digits, comma-joined.
``ja4_r`` is the same with the lists in clear instead of hashed; ``ja4_o`` and
``ja4_ro`` keep the wire order (SNI and ALPN included). JA3 is not used: it hashes
the extensions in wire order, and Chrome permutes that order on every connection.

tshark (4.0 here, which has JA3 but no JA4 field) is asked for :data:`TSHARK_FIELDS`
with ``-T fields``; :func:`parse_tshark_fields` reads one such line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# One ClientHello per line, in this order; repeated values come comma-joined
# (tshark's default aggregator). Extension types print in decimal, the rest in hex.
TSHARK_FIELDS: tuple[str, ...] = (
    "frame.number",
    "tcp.srcport",
    "tcp.dstport",
    "tls.handshake.version",
    "tls.handshake.ciphersuite",
    "tls.handshake.extension.type",
    "tls.handshake.extensions_supported_group",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.sig_hash_alg",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.extensions_server_name",
)
TSHARK_SEPARATOR = "\t"

EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B

_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0200: "s2",
    0x0100: "s1",
}


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE: both bytes equal and of the form 0x?a (0x0a0a ... 0xfafa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def _hex4(values: Iterable[int]) -> list[str]:
    return [f"{v:04x}" for v in values]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ClientHello:
    """The fields of one ClientHello that fingerprints look at, GREASE included, in wire order."""

    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    groups: tuple[int, ...] = ()
    alpn: tuple[str, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    supported_versions: tuple[int, ...] = ()
    server_name: str | None = None
    legacy_version: int = 0x0303
    transport: str = "t"  # "t" TCP, "q" QUIC, "d" DTLS
    src_port: int | None = None
    dst_port: int | None = None
    frame: int | None = None

    # -- without GREASE ------------------------------------------------------------
    @property
    def ciphers_clean(self) -> tuple[int, ...]:
        return tuple(v for v in self.ciphers if not is_grease(v))

    @property
    def extensions_clean(self) -> tuple[int, ...]:
        return tuple(v for v in self.extensions if not is_grease(v))

    @property
    def groups_clean(self) -> tuple[int, ...]:
        return tuple(v for v in self.groups if not is_grease(v))

    @property
    def signature_algorithms_clean(self) -> tuple[int, ...]:
        return tuple(v for v in self.signature_algorithms if not is_grease(v))

    @property
    def grease(self) -> dict[str, bool]:
        """Where GREASE appears: Chrome puts it in all four, OpenSSL in none."""
        return {
            "ciphers": any(map(is_grease, self.ciphers)),
            "extensions": any(map(is_grease, self.extensions)),
            "groups": any(map(is_grease, self.groups)),
            "supported_versions": any(map(is_grease, self.supported_versions)),
        }

    @property
    def has_sni(self) -> bool:
        return EXT_SERVER_NAME in self.extensions

    @property
    def tls_version(self) -> int:
        offered = [v for v in self.supported_versions if not is_grease(v)]
        if EXT_SUPPORTED_VERSIONS in self.extensions and offered:
            return max(offered)
        return self.legacy_version


def _alpn_chars(alpn: Sequence[str]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first = alpn[0]
    if first[0].isascii() and first[0].isalnum() and first[-1].isascii() and first[-1].isalnum():
        return first[0] + first[-1]
    # The spec's rule for a non-alphanumeric value: first and last hex digit of its bytes.
    raw = first.encode().hex()
    return raw[0] + raw[-1]


def ja4_a(hello: ClientHello) -> str:
    version = _VERSIONS.get(hello.tls_version, "00")
    sni = "d" if hello.has_sni else "i"
    n_ciphers = min(len(hello.ciphers_clean), 99)
    n_extensions = min(len(hello.extensions_clean), 99)
    return (
        f"{hello.transport}{version}{sni}{n_ciphers:02d}{n_extensions:02d}{_alpn_chars(hello.alpn)}"
    )


def _b_c_raw(hello: ClientHello, *, original: bool) -> tuple[str, str]:
    ciphers = list(hello.ciphers_clean)
    extensions = list(hello.extensions_clean)
    if not original:
        ciphers.sort()
        extensions = sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    b = ",".join(_hex4(ciphers))
    c = ",".join(_hex4(extensions))
    sigs = hello.signature_algorithms_clean
    if sigs:
        c += "_" + ",".join(_hex4(sigs))
    return b, c


def _ja4(hello: ClientHello, *, original: bool, raw: bool) -> str:
    b, c = _b_c_raw(hello, original=original)
    if not raw:
        b = _hash12(b) if b else "000000000000"
        c = _hash12(c) if c else "000000000000"
    return f"{ja4_a(hello)}_{b}_{c}"


def ja4(hello: ClientHello) -> str:
    """The JA4 fingerprint, e.g. ``t13d1516h2_8daaf6152771_e5627efa2ab1``."""
    return _ja4(hello, original=False, raw=False)


def ja4_r(hello: ClientHello) -> str:
    """JA4 with the sorted lists in clear instead of their hashes."""
    return _ja4(hello, original=False, raw=True)


def ja4_o(hello: ClientHello) -> str:
    """JA4 over the wire order (SNI and ALPN kept): changes with Chrome's permutation."""
    return _ja4(hello, original=True, raw=False)


def ja4_ro(hello: ClientHello) -> str:
    return _ja4(hello, original=True, raw=True)


# -- tshark ------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if item:
            out.append(int(item, 16) if item.lower().startswith("0x") else int(item, 10))
    return tuple(out)


def parse_tshark_fields(line: str, separator: str = TSHARK_SEPARATOR) -> ClientHello:
    """One line of ``tshark -T fields`` with :data:`TSHARK_FIELDS`, in that order."""
    cols = line.rstrip("\r\n").split(separator)
    if len(cols) != len(TSHARK_FIELDS):
        raise ValueError(f"expected {len(TSHARK_FIELDS)} fields, got {len(cols)}: {line!r}")
    row = dict(zip(TSHARK_FIELDS, cols, strict=True))

    def one(name: str) -> int | None:
        values = _ints(row[name])
        return values[0] if values else None

    alpn = tuple(a for a in row["tls.handshake.extensions_alpn_str"].split(",") if a)
    return ClientHello(
        ciphers=_ints(row["tls.handshake.ciphersuite"]),
        extensions=_ints(row["tls.handshake.extension.type"]),
        groups=_ints(row["tls.handshake.extensions_supported_group"]),
        alpn=alpn,
        signature_algorithms=_ints(row["tls.handshake.sig_hash_alg"]),
        supported_versions=_ints(row["tls.handshake.extensions.supported_version"]),
        server_name=row["tls.handshake.extensions_server_name"] or None,
        legacy_version=one("tls.handshake.version") or 0x0303,
        src_port=one("tcp.srcport"),
        dst_port=one("tcp.dstport"),
        frame=one("frame.number"),
    )


# -- names, for people reading the output -------------------------------------------

CIPHER_NAMES: dict[int, str] = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02B: "ECDHE_ECDSA_AES_128_GCM_SHA256",
    0xC02F: "ECDHE_RSA_AES_128_GCM_SHA256",
    0xC02C: "ECDHE_ECDSA_AES_256_GCM_SHA384",
    0xC030: "ECDHE_RSA_AES_256_GCM_SHA384",
    0xCCA9: "ECDHE_ECDSA_CHACHA20_POLY1305",
    0xCCA8: "ECDHE_RSA_CHACHA20_POLY1305",
    0xC013: "ECDHE_RSA_AES_128_CBC_SHA",
    0xC014: "ECDHE_RSA_AES_256_CBC_SHA",
    0x009C: "RSA_AES_128_GCM_SHA256",
    0x009D: "RSA_AES_256_GCM_SHA384",
    0x002F: "RSA_AES_128_CBC_SHA",
    0x0035: "RSA_AES_256_CBC_SHA",
    0xC023: "ECDHE_ECDSA_AES_128_CBC_SHA256",
    0xC024: "ECDHE_ECDSA_AES_256_CBC_SHA384",
    0xC027: "ECDHE_RSA_AES_128_CBC_SHA256",
    0xC028: "ECDHE_RSA_AES_256_CBC_SHA384",
    0x009E: "DHE_RSA_AES_128_GCM_SHA256",
    0x009F: "DHE_RSA_AES_256_GCM_SHA384",
    0x0067: "DHE_RSA_AES_128_CBC_SHA256",
    0x006B: "DHE_RSA_AES_256_CBC_SHA256",
    0x00FF: "EMPTY_RENEGOTIATION_INFO_SCSV",
}
EXTENSION_NAMES: dict[int, str] = {
    0x0000: "server_name",
    0x0005: "status_request",
    0x000A: "supported_groups",
    0x000B: "ec_point_formats",
    0x000D: "signature_algorithms",
    0x0010: "alpn",
    0x0012: "signed_certificate_timestamp",
    0x0015: "padding",
    0x0016: "encrypt_then_mac",
    0x0017: "extended_master_secret",
    0x001B: "compress_certificate",
    0x0023: "session_ticket",
    0x0029: "pre_shared_key",
    0x002B: "supported_versions",
    0x002D: "psk_key_exchange_modes",
    0x0031: "post_handshake_auth",
    0x0033: "key_share",
    0x4469: "application_settings (old)",
    0x44CD: "application_settings",
    0xCA34: "trust_anchors",
    0xFE0D: "encrypted_client_hello",
    0xFF01: "renegotiation_info",
}
GROUP_NAMES: dict[int, str] = {
    0x11EC: "X25519MLKEM768",
    0x6399: "X25519Kyber768Draft00",
    0x001D: "x25519",
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001E: "x448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
}
SIGNATURE_NAMES: dict[int, str] = {
    0x0904: "mldsa44",
    0x0905: "mldsa65",
    0x0906: "mldsa87",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0303: "ecdsa_sha224",
    0x0301: "rsa_pkcs1_sha224",
    0x0302: "dsa_sha224",
    0x0402: "dsa_sha256",
    0x0502: "dsa_sha384",
    0x0602: "dsa_sha512",
}


def label(value: int, names: dict[int, str]) -> str:
    """``0x1301 TLS_AES_128_GCM_SHA256``; GREASE and unknown values say so."""
    name = "GREASE" if is_grease(value) else names.get(value, "?")
    return f"0x{value:04x} {name}"


def summary(hello: ClientHello) -> dict[str, object]:
    """What a reader compares: ciphers in wire order, extensions sorted (their order is
    permuted by Chrome), groups and signature algorithms in order, ALPN, GREASE."""
    return {
        "ja4": ja4(hello),
        "ja4_r": ja4_r(hello),
        "tls_version": f"0x{hello.tls_version:04x}",
        "server_name": hello.server_name,
        "cipher_suites": _hex4(hello.ciphers),
        "extensions_sorted": _hex4(sorted(hello.extensions_clean)),
        "supported_groups": _hex4(hello.groups),
        "signature_algorithms": _hex4(hello.signature_algorithms),
        "supported_versions": _hex4(hello.supported_versions),
        "alpn": list(hello.alpn),
        "grease": hello.grease,
    }


# -- Chrome's reference --------------------------------------------------------------


@dataclass(frozen=True)
class BrowserReference:
    """What a browser's ClientHello holds once GREASE is removed, and where it was seen.

    ``extensions`` is the set sent to a domain (SNI included); to an IP address the
    same browser sends it without ``server_name``. ``ja4`` is the published fingerprint
    of the real browser to a domain, independent of this code: the unit tests hold
    that these fields hash to it.
    """

    name: str
    ciphers: tuple[int, ...]
    extensions: frozenset[int]
    groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]
    ja4: str
    source: str

    def as_hello(self, *, server_name: str | None = "example.com") -> ClientHello:
        """A GREASE-free ClientHello with these fields (extensions in sorted order)."""
        exts = set(self.extensions)
        if server_name is None:
            exts.discard(EXT_SERVER_NAME)
        return ClientHello(
            ciphers=self.ciphers,
            extensions=tuple(sorted(exts)),
            groups=self.groups,
            alpn=self.alpn,
            signature_algorithms=self.signature_algorithms,
            supported_versions=self.supported_versions,
            server_name=server_name,
        )


def _hex_list(text: str) -> tuple[int, ...]:
    return tuple(int(v, 16) for v in text.split(","))


# Written as the published JA4_r lists are, so they can be compared by eye.
CHROME_CIPHERS = _hex_list(
    "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
)
CHROME_JA4_B = "8daaf6152771"  # sha256[:12] of CHROME_CIPHERS sorted; Chrome's since ~v110

CHROME_152 = BrowserReference(
    name="Chrome 152",
    ciphers=CHROME_CIPHERS,
    extensions=frozenset(
        _hex_list(
            "0000,0005,000a,000b,000d,0010,0012,0017,001b,0023,002b,002d,0033,44cd,ca34,fe0d,ff01"
        )
    ),
    groups=_hex_list("11ec,001d,0017,0018"),
    signature_algorithms=_hex_list("0904,0905,0906,0403,0804,0401,0503,0805,0501,0806,0601"),
    alpn=("h2", "http/1.1"),
    supported_versions=_hex_list("0304,0303"),
    ja4="t13d1517h2_8daaf6152771_cb7bf5808d99",
    source=(
        "real Chrome/152.0.0.0 captured at tls.peet.ws (4 connections); 0xca34 "
        "trust_anchors is new in 152, 0x0904-0x0906 ML-DSA since 151"
    ),
)

# curl_cffi impersonation target -> the browser it copies. "chrome" is curl_cffi's
# alias for its newest Chrome (chrome152 in curl_cffi 0.17).
REFERENCES: dict[str, BrowserReference] = {"chrome152": CHROME_152}


def chrome_mismatches(hello: ClientHello, ref: BrowserReference) -> list[str]:
    """Every way ``hello`` is not ``ref``'s ClientHello; empty when it is.

    Ciphers, groups, signature algorithms and ALPN are compared in order (Chrome
    keeps them fixed), extensions as a set (Chrome permutes them per connection),
    and GREASE must appear in ciphers, extensions, groups and supported_versions.
    """
    problems: list[str] = []
    for where, present in hello.grease.items():
        if not present:
            problems.append(f"no GREASE value in {where}")
    if hello.ciphers_clean != ref.ciphers:
        problems.append(
            f"cipher suites {_hex4(hello.ciphers_clean)} != {ref.name}'s {_hex4(ref.ciphers)}"
        )
    want = set(ref.extensions)
    if not hello.has_sni:
        want.discard(EXT_SERVER_NAME)
    got = set(hello.extensions_clean)
    if got != want:
        missing = _hex4(sorted(want - got))
        extra = _hex4(sorted(got - want))
        problems.append(f"extensions differ from {ref.name}'s: missing {missing}, extra {extra}")
    if hello.groups_clean != ref.groups:
        problems.append(
            f"supported groups {_hex4(hello.groups_clean)} != {ref.name}'s {_hex4(ref.groups)}"
        )
    if hello.signature_algorithms_clean != ref.signature_algorithms:
        problems.append(
            f"signature algorithms {_hex4(hello.signature_algorithms_clean)} "
            f"!= {ref.name}'s {_hex4(ref.signature_algorithms)}"
        )
    if hello.alpn != ref.alpn:
        problems.append(f"ALPN {list(hello.alpn)} != {ref.name}'s {list(ref.alpn)}")
    versions = tuple(v for v in hello.supported_versions if not is_grease(v))
    if versions != ref.supported_versions:
        problems.append(
            f"supported versions {_hex4(versions)} != {ref.name}'s {_hex4(ref.supported_versions)}"
        )
    expected = ja4(ref.as_hello(server_name=hello.server_name if hello.has_sni else None))
    if not problems and ja4(hello) != expected:
        problems.append(f"JA4 {ja4(hello)} != {expected}")
    return problems
