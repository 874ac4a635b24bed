from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocov_jobs.crypto import (
    IV_SIZE,
    CryptoError,
    _encrypt_with_iv,
    decrypt,
    encode64,
    encrypt,
    encrypted_id_value,
    id_from_encrypted_value,
    new_secret_authorization_token,
    new_service_token,
    service_token_digest,
    token_digest,
)

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
IV = b"fedcba9876543210"
# Produced by Ruby's OpenSSL with Cocov::Crypto's layout, KEY and IV above, plaintext "42".
KNOWN_CIPHERTEXT = bytes.fromhex(
    "106665646362613938373635343332313081df5dc9545d268ad13ffce750392e2d"
)
KNOWN_ENCODE64 = "EGZlZGNiYTk4NzY1NDMyMTCB313JVF0mitE//OdQOS4t\n"
# Ruby: Base64.encode64 of the same layout for this 80-byte plaintext (three lines).
LONG_PLAINTEXT = b"a secret value that spans several AES blocks, long enough for MIME line wrapping"
LONG_ENCODE64 = (
    "EGZlZGNiYTk4NzY1NDMyMTBHHV+CcOIX9jtLcG06iZnVU7CcFS9PCKMal9VD\n"
    "ghiC7T6nL9QK54/j4LgHjVyXTNgoApEA/szPjj2NoTjRuKAYGrc2LW/O2udQ\n"
    "KEgKDgTiWTwYlKsUkIBHWIl14PvEo68=\n"
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_round_trip(plaintext: bytes) -> None:
    assert decrypt(KEY, encrypt(KEY, plaintext)) == plaintext


@pytest.mark.parametrize(("size", "expected"), [(0, 33), (15, 33), (16, 49), (40, 65)])
def test_layout(size: int, expected: int) -> None:
    data = encrypt(KEY, b"x" * size)
    assert data[0] == 0x10 == IV_SIZE
    assert len(data) == expected  # 1 + 16 + PKCS#7-padded length


def test_iv_is_random() -> None:
    first, second = encrypt(KEY, b"same"), encrypt(KEY, b"same")
    assert first[1:17] != second[1:17]
    assert first != second


def test_known_answer_matches_ruby_openssl() -> None:
    assert _encrypt_with_iv(KEY, IV, b"42") == KNOWN_CIPHERTEXT
    assert decrypt(KEY, KNOWN_CIPHERTEXT) == b"42"
    assert encode64(KNOWN_CIPHERTEXT) == KNOWN_ENCODE64
    assert encode64(_encrypt_with_iv(KEY, IV, LONG_PLAINTEXT)) == LONG_ENCODE64


@pytest.mark.parametrize("key", [b"", b"short", KEY + b"x", KEY[:31]])
def test_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ValueError, match="must be 32 bytes"):
        encrypt(key, b"x")
    with pytest.raises(ValueError, match="must be 32 bytes"):
        decrypt(key, KNOWN_CIPHERTEXT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x08" + KNOWN_CIPHERTEXT[1:], "Unsupported IV length 8"),
        (KNOWN_CIPHERTEXT[:17], "Truncated"),
        (KNOWN_CIPHERTEXT[:10], "Truncated"),
        (KNOWN_CIPHERTEXT[:-1], "Truncated"),
        (KNOWN_CIPHERTEXT[:-1] + bytes([KNOWN_CIPHERTEXT[-1] ^ 0x01]), "Bad padding"),
    ],
)
def test_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(CryptoError, match=message):
        decrypt(KEY, data)


def test_wrong_key_is_a_crypto_error() -> None:
    with pytest.raises(CryptoError, match="Bad padding"):
        decrypt(OTHER_KEY, KNOWN_CIPHERTEXT)


def test_encode64_matches_ruby_line_format() -> None:
    data = bytes(range(100))
    encoded = encode64(data)
    lines = encoded.split("\n")
    assert encoded.endswith("\n")
    assert [len(line) for line in lines] == [60, 60, 16, 0]
    # Ruby: Base64.encode64((0...100).map(&:chr).join)
    assert encoded == (
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKiss\n"
        "LS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZ\n"
        "WltcXV5fYGFiYw==\n"
    )
    assert base64.b64decode(encoded.replace("\n", "")) == data
    assert encode64(b"") == ""
    assert encode64(bytes(45)) == base64.b64encode(bytes(45)).decode() + "\n"


def test_encrypted_id_value_round_trip() -> None:
    value = encrypted_id_value(KEY, 1234)
    assert value.endswith("\n")
    assert value.count("\n") == 1  # 33 bytes fit on one 60-character line
    assert decrypt(KEY, base64.b64decode(value)) == b"1234"
    assert id_from_encrypted_value(KEY, value) == 1234


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64 ü", "not base64"),
        ("QQ=", "not base64"),
        (encode64(_encrypt_with_iv(KEY, IV, b"12a")), "does not hold an id"),
        (encode64(_encrypt_with_iv(KEY, IV, b"")), "does not hold an id"),
    ],
)
def test_secret_id_from_bad_authorization_value(value: str, message: str) -> None:
    with pytest.raises(CryptoError, match=message):
        id_from_encrypted_value(KEY, value)


def test_secret_authorization_token_format() -> None:
    tokens = {new_secret_authorization_token() for _ in range(20)}
    assert len(tokens) == 20
    assert all(re.fullmatch(r"csa_[0-9a-f]{48}", token) for token in tokens)


def test_token_digest_is_sha256_hex() -> None:
    # Ruby: OpenSSL::Digest::SHA256.hexdigest("csa_0123")
    assert token_digest("csa_0123") == (
        "39005f6970ae1b74039d3b67cf48ba6c98ef8612a579c38bbc80722015813efe"
    )


def test_service_token_format_and_digest() -> None:
    tokens = {new_service_token() for _ in range(20)}
    assert len(tokens) == 20
    assert all(re.fullmatch(r"cos_[0-9a-f]{64}", token) for token in tokens)
    # Ruby: Digest::SHA256.base64digest("cos_abc")
    assert service_token_digest("cos_abc") == "bPNVatQPnV84DU/ArsDpBOpRJr5lUSIiMPIzJPx6htg="
