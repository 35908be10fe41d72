"""Mosquitto's `$7$` password hashes (PBKDF2-SHA512), as `mosquitto_passwd` writes them.

Only the hash is ever stored; the platform shows a generated password once and forgets it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101  # mosquitto_passwd's default for $7$; Mosquitto reads the count from the line
SALT_BYTES = 12


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """`$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>`, the form Mosquitto 2.0 verifies."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` hash (what Mosquitto checks at CONNECT)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def generate_password() -> str:
    """24 random bytes, URL-safe: fits in an mqtt:// URL and a shell argument unquoted."""
    return secrets.token_urlsafe(24)
