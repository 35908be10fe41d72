"""Vendor payload decoders, by name.

Every module in this package that defines `DECODERS: list[Decoder]` contributes to the catalogue;
names are unique and stable (they are stored in the device registry).
"""

from __future__ import annotations

import importlib
import pkgutil

from devices.decoders.base import Decoder, DecoderInfo, Uplink

_INFRA = {"base", "mbus", "ranges", "util"}


def _load() -> dict[str, Decoder]:
    found: dict[str, Decoder] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name in _INFRA or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for dec in getattr(module, "DECODERS", []):
            if dec.info.name in found:
                raise RuntimeError(f"two decoders are named {dec.info.name!r}")
            found[dec.info.name] = dec
    return found


DECODERS: dict[str, Decoder] = _load()

__all__ = ["DECODERS", "Decoder", "DecoderInfo", "Uplink"]
