"""The shapes a device's identities can take, as the registry's CHECK constraints allow them.

A key from the wire (a topic level, a DevEUI or meter id in a gateway's JSON) that cannot have
one of these shapes names no device: it is refused before it reaches a query, so no message can
make the registry lookup fail (a NUL character, a lone surrogate, a 1 MB string).
"""

from __future__ import annotations

import re

# migrations/001 (devices.id), 003 (dev_eui, wmbus_id). fullmatch: `$` would allow a final "\n".
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DEV_EUI = re.compile(r"[0-9a-f]{16}")
_WMBUS_ID = re.compile(r"[0-9a-z]{1,16}")


def valid_device_id(value: str) -> bool:
    return _DEVICE_ID.fullmatch(value) is not None


def valid_dev_eui(value: str) -> bool:
    """A DevEUI as stored: 16 lowercase hexadecimal digits."""
    return _DEV_EUI.fullmatch(value) is not None


def valid_wmbus_id(value: str) -> bool:
    """A wM-Bus meter id as stored: lowercase letters and digits, at most 16."""
    return _WMBUS_ID.fullmatch(value) is not None


VALIDATORS = {"id": valid_device_id, "dev_eui": valid_dev_eui, "wmbus_id": valid_wmbus_id}
