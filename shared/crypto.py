"""Airbnb credentials at rest and on the wire: Fernet tokens under SECRET_KEYS.

MultiFernet encrypts with the first key and decrypts with any, so keys rotate:
put the new key first, run ``sync-airbnb rotate-keys``, then drop the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialsError(Exception):
    """A token that no configured key can decrypt. Carries no secret."""


_UNDECRYPTABLE = "credentials token cannot be decrypted with SECRET_KEYS"


class CredentialCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise CredentialsError(_UNDECRYPTABLE) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key (a no-op in meaning, a change in bytes)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise CredentialsError(_UNDECRYPTABLE) from None

    def __repr__(self) -> str:
        return "CredentialCipher(<keys hidden>)"
