"""Cocov-compatible encryption and the tokens built on it (docs/architecture.md §6.13).

Ciphertext layout (``Cocov::Crypto``)::

    0x10 ‖ IV (16 random bytes) ‖ AES-256-CBC(key, IV, PKCS#7(plaintext))

The key is the raw bytes of ``COCOV_CRYPTOGRAPHIC_KEY`` and must be 32 bytes long. CBC has
no integrity check (kept for compatibility): a tampered ciphertext is detected only when
it breaks the padding.

Tokens:

* secret authorization: ``csa_`` + 48 lower-case hex; Redis stores it under
  ``sha256_hex(token)`` with the value ``encode64(encrypt(str(secret_id)))``;
* service token: ``cos_`` + 64 lower-case hex; ``service_tokens.hashed_token`` is
  ``base64(sha256(token))`` without a newline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from typing import Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Length of ``COCOV_CRYPTOGRAPHIC_KEY`` in bytes (AES-256).
KEY_SIZE: Final = 32
#: Length of the CBC initialisation vector, also written as the ciphertext's first byte.
IV_SIZE: Final = 16
#: Prefix and random byte count of a secret authorization token.
SECRET_AUTHORIZATION_PREFIX: Final = "csa_"
SECRET_AUTHORIZATION_RANDOM_BYTES: Final = 24
#: Prefix and random byte count of a service token.
SERVICE_TOKEN_PREFIX: Final = "cos_"
SERVICE_TOKEN_RANDOM_BYTES: Final = 32
#: Input bytes per line of Ruby's ``Base64.encode64`` (60 output characters).
ENCODE64_LINE_BYTES: Final = 45

_BLOCK_BITS: Final = algorithms.AES.block_size
_BLOCK_SIZE: Final = _BLOCK_BITS // 8


class CryptoError(Exception):
    """Data that cannot be decrypted: malformed, truncated, tampered or another key's."""


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    """``0x10 ‖ IV ‖ AES-256-CBC(PKCS#7(plaintext))`` with a fresh random IV."""
    return _encrypt_with_iv(key, os.urandom(IV_SIZE), plaintext)


def _encrypt_with_iv(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    _check_key(key)
    padder = padding.PKCS7(_BLOCK_BITS).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return bytes((len(iv),)) + iv + encryptor.update(padded) + encryptor.finalize()


def decrypt(key: bytes, data: bytes) -> bytes:
    """Inverse of :func:`encrypt`; the first byte gives the IV length, which must be 16.

    Raises :class:`ValueError` for a key that is not 32 bytes, :class:`CryptoError` for
    anything else that cannot be decrypted.
    """
    _check_key(key)
    if not data:
        raise CryptoError("Cannot decrypt empty data")
    if data[0] != IV_SIZE:
        raise CryptoError(f"Unsupported IV length {data[0]} (expected {IV_SIZE})")
    iv, body = data[1 : 1 + IV_SIZE], data[1 + IV_SIZE :]
    if len(iv) != IV_SIZE or not body or len(body) % _BLOCK_SIZE:
        raise CryptoError(
            f"Truncated ciphertext: {len(data)} bytes is not {1 + IV_SIZE} + a positive "
            f"multiple of {_BLOCK_SIZE}"
        )
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError("Bad padding: wrong key or corrupted data") from None


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"The cryptographic key must be {KEY_SIZE} bytes, got {len(key)}")


def encode64(data: bytes) -> str:
    """Ruby's ``Base64.encode64``: standard base64 in lines of 60 characters, each ending
    with ``\\n`` (the last one too); ``""`` for no data."""
    return "".join(
        base64.b64encode(data[start : start + ENCODE64_LINE_BYTES]).decode("ascii") + "\n"
        for start in range(0, len(data), ENCODE64_LINE_BYTES)
    )


# --------------------------------------------------------------------------- secrets


def new_secret_authorization_token() -> str:
    """``csa_`` followed by 48 random lower-case hex digits."""
    return SECRET_AUTHORIZATION_PREFIX + secrets.token_hex(SECRET_AUTHORIZATION_RANDOM_BYTES)


def token_digest(token: str) -> str:
    """``sha256_hex(token)``: the Redis key part for a secret authorization."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def encrypted_id_value(key: bytes, record_id: int) -> str:
    """``encode64(encrypt(str(record_id)))``: how Cocov stores an id in Redis (a secret
    authorization's secret id, a Sidekiq panel exchange token's user id)."""
    return encode64(encrypt(key, str(record_id).encode("ascii")))


def id_from_encrypted_value(key: bytes, value: str) -> int:
    """Inverse of :func:`encrypted_id_value` (newlines in ``value`` are ignored)."""
    try:
        data = binascii.a2b_base64(value.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error):
        raise CryptoError("Encrypted id value is not base64") from None
    plaintext = decrypt(key, data)
    if not plaintext.isdigit():
        raise CryptoError("Encrypted id value does not hold an id")
    return int(plaintext)


# --------------------------------------------------------------------------- service tokens


def new_service_token() -> str:
    """``cos_`` followed by 64 random lower-case hex digits."""
    return SERVICE_TOKEN_PREFIX + secrets.token_hex(SERVICE_TOKEN_RANDOM_BYTES)


def service_token_digest(token: str) -> str:
    """``base64(sha256(token))`` without a newline, as ``service_tokens.hashed_token``."""
    return base64.b64encode(hashlib.sha256(token.encode("utf-8")).digest()).decode("ascii")
