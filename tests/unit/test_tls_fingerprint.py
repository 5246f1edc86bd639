"""JA4 and the Chrome reference (shared/airbnb/tls_fingerprint.py), on published values.

Worked examples, each from a source independent of this code:

- FoxIO's JA4 spec (technical_details/JA4.md, v0.18.2) walks one Chrome ClientHello
  through every step: t13d1516h2_8daaf6152771_e5627efa2ab1, its raw forms and ja4_o.
- browserleaks.com's report of a real Chrome 143 (ja4, ja4_o and ja4_ro).
- tls.peet.ws's capture of a real Chrome 152: t13d1517h2_8daaf6152771_cb7bf5808d99.
- Two tshark 4.0 lines captured on this machine: curl_cffi's chrome152 and Python's ssl.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.airbnb.tls_fingerprint import (
    CHROME_152,
    CHROME_CIPHERS,
    CHROME_JA4_B,
    REFERENCES,
    TSHARK_FIELDS,
    ClientHello,
    chrome_mismatches,
    is_grease,
    ja4,
    ja4_a,
    ja4_o,
    ja4_r,
    ja4_ro,
    parse_tshark_fields,
    summary,
)

GREASE = [0x0A0A + 0x1010 * i for i in range(16)]


def _hexes(text: str) -> tuple[int, ...]:
    return tuple(int(v, 16) for v in text.split(","))


# FoxIO's example, with GREASE put back where Chrome sends it (the spec strips it first).
SPEC_CIPHERS = "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
SPEC_EXTENSIONS = "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015"
SPEC_SIGS = "0403,0804,0401,0503,0805,0501,0806,0601"
SPEC_HELLO = ClientHello(
    ciphers=(0x2A2A, *_hexes(SPEC_CIPHERS)),
    extensions=(0x8A8A, *_hexes(SPEC_EXTENSIONS), 0x1A1A),
    groups=(0x3A3A, 0x001D, 0x0017, 0x0018),
    alpn=("h2", "http/1.1"),
    signature_algorithms=_hexes(SPEC_SIGS),
    supported_versions=(0x5A5A, 0x0304, 0x0303),
    server_name="example.com",
)


def test_grease_values_are_the_sixteen_of_rfc_8701():
    assert [v for v in range(0x10000) if is_grease(v)] == GREASE
    assert not is_grease(0x0A1A)
    assert not is_grease(0xCA34)  # Chrome 152's trust_anchors looks close but is not


def test_the_spec_worked_example():
    assert ja4_a(SPEC_HELLO) == "t13d1516h2"
    assert ja4(SPEC_HELLO) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_r(SPEC_HELLO) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
        "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert ja4_ro(SPEC_HELLO) == f"t13d1516h2_{SPEC_CIPHERS}_{SPEC_EXTENSIONS}_{SPEC_SIGS}"
    assert ja4_o(SPEC_HELLO) == "t13d1516h2_acb858a92679_18f69afefd3d"


def test_no_signature_algorithms_hashes_the_extensions_alone():
    hello = replace(SPEC_HELLO, signature_algorithms=())
    assert ja4(hello).endswith("_6d807ffa2a79")  # the spec's value


def test_a_real_chrome_143_from_its_original_order():
    # browserleaks.com's ja4_ro of Chrome 143: the order is one of Chrome's permutations.
    exts = "002d,0033,0010,fe0d,0017,44cd,0000,000b,000a,002b,ff01,0023,0012,0005,000d,001b"
    hello = ClientHello(
        ciphers=(0x4A4A, *CHROME_CIPHERS),
        extensions=(0x6A6A, *_hexes(exts), 0xBABA),
        alpn=("h2", "http/1.1"),
        signature_algorithms=_hexes(SPEC_SIGS),
        supported_versions=(0x0304, 0x0303),
        server_name="tls.browserleaks.com",
    )
    assert ja4(hello) == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    assert ja4_o(hello) == "t13d1516h2_acb858a92679_f96a17c57971"
    # The sorted form does not depend on the permutation; the original one does.
    shuffled = replace(hello, extensions=tuple(reversed(hello.extensions)))
    assert ja4(shuffled) == ja4(hello)
    assert ja4_o(shuffled) != ja4_o(hello)


def test_the_chrome_152_reference_hashes_to_the_published_fingerprint():
    assert ja4(CHROME_152.as_hello()) == CHROME_152.ja4 == "t13d1517h2_8daaf6152771_cb7bf5808d99"
    # To an IP address there is no SNI: "i", one extension fewer, the same hashes
    # (JA4_c leaves SNI out for exactly this reason).
    assert ja4(CHROME_152.as_hello(server_name=None)) == "t13i1516h2_8daaf6152771_cb7bf5808d99"
    assert ja4(CHROME_152.as_hello()).split("_")[1] == CHROME_JA4_B
    assert REFERENCES["chrome152"] is CHROME_152


def test_alpn_version_and_count_rules():
    base = ClientHello(ciphers=(0x1301,), extensions=(0x0010,), alpn=("http/1.1",))
    assert ja4_a(base) == "t12i0101h1"  # no supported_versions: the legacy 0x0303
    assert ja4_a(ClientHello(ciphers=(), extensions=())) == "t12i000000"
    assert ja4(ClientHello(ciphers=(), extensions=())) == "t12i000000_000000000000_000000000000"
    assert ja4_a(ClientHello(ciphers=(), extensions=(), alpn=("\x00x\x01",))) == "t12i000001"
    many = ClientHello(ciphers=tuple(range(1, 120)), extensions=tuple(range(1, 120)))
    assert ja4_a(many) == "t12i999900"
    # supported_versions wins over the legacy version, and its GREASE is skipped.
    tls13 = ClientHello(ciphers=(), extensions=(0x002B,), supported_versions=(0xFAFA, 0x0304))
    assert ja4_a(tls13) == "t13i000100"


# Captured here with tshark 4.0.17 (-T fields, TSHARK_FIELDS): curl_cffi 0.17
# impersonate="chrome" (chrome152), then Python 3.11's ssl, both to 127.0.0.1.
CURL_CFFI_LINE = "\t".join(
    [
        "4",
        "44956",
        "18443",
        "0x0303",
        "0x7a7a,0x1301,0x1302,0x1303,0xc02b,0xc02f,0xc02c,0xc030,0xcca9,0xcca8,0xc013,"
        "0xc014,0x009c,0x009d,0x002f,0x0035",
        "56026,23,43,51,10,51764,65037,13,16,11,5,27,35,18,45,65281,17613,47802",
        "0x9a9a,0x11ec,0x001d,0x0017,0x0018",
        "h2,http/1.1",
        "0x0904,0x0905,0x0906,0x0403,0x0804,0x0401,0x0503,0x0805,0x0501,0x0806,0x0601",
        "0x3a3a,0x0304,0x0303",
        "",
    ]
)
PYTHON_LINE = "\t".join(
    [
        "18",
        "44962",
        "18443",
        "0x0303",
        "0x1302,0x1303,0x1301,0xc02c,0xc030,0xc02b,0xc02f,0xcca9,0xcca8,0xc024,0xc028,"
        "0xc023,0xc027,0x009f,0x009e,0x006b,0x0067,0x00ff",
        "11,10,35,22,23,13,43,45,51,21",
        "0x001d,0x0017,0x001e,0x0019,0x0018,0x0100,0x0101,0x0102,0x0103,0x0104",
        "",
        "0x0403,0x0503,0x0603,0x0807,0x0808,0x0809,0x080a,0x080b,0x0804,0x0805,0x0806,"
        "0x0401,0x0501,0x0601,0x0303,0x0301,0x0302,0x0402,0x0502,0x0602",
        "0x0304,0x0303",
        "",
    ]
)


def test_parse_a_tshark_line():
    hello = parse_tshark_fields(CURL_CFFI_LINE)
    assert (hello.frame, hello.src_port, hello.dst_port) == (4, 44956, 18443)
    assert hello.ciphers[0] == 0x7A7A and hello.ciphers_clean == CHROME_CIPHERS
    assert hello.extensions[0] == 0xDADA  # decimal in tshark's output
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.server_name is None and not hello.has_sni
    assert hello.tls_version == 0x0304
    with pytest.raises(ValueError, match="expected 11 fields"):
        parse_tshark_fields("1\t2")
    assert len(TSHARK_FIELDS) == 11


def test_curl_cffi_chrome152_on_the_wire_is_chrome_152():
    hello = parse_tshark_fields(CURL_CFFI_LINE)
    assert ja4(hello) == "t13i1516h2_8daaf6152771_cb7bf5808d99"
    assert all(hello.grease.values())
    assert chrome_mismatches(hello, CHROME_152) == []
    s = summary(hello)
    assert s["alpn"] == ["h2", "http/1.1"]
    assert s["supported_groups"] == ["9a9a", "11ec", "001d", "0017", "0018"]
    assert "ca34" in s["extensions_sorted"]


def test_python_ssl_on_the_wire_is_not_chrome():
    hello = parse_tshark_fields(PYTHON_LINE)
    assert ja4(hello) == "t13i181000_85036bcba153_d41ae481755e"
    assert not any(hello.grease.values())
    problems = chrome_mismatches(hello, CHROME_152)
    text = "\n".join(problems)
    for expected in ("no GREASE value in ciphers", "cipher suites", "extensions differ", "ALPN"):
        assert expected in text


def test_one_difference_is_named():
    chrome = parse_tshark_fields(CURL_CFFI_LINE)
    no_ech = replace(chrome, extensions=tuple(e for e in chrome.extensions if e != 0xFE0D))
    assert chrome_mismatches(no_ech, CHROME_152) == [
        "extensions differ from Chrome 152's: missing ['fe0d'], extra []"
    ]
    reordered = replace(chrome, ciphers=(0x7A7A, *reversed(CHROME_CIPHERS)))
    assert len(chrome_mismatches(reordered, CHROME_152)) == 1
