"""The device kinds the platform knows: one module each (see devices/declare.py).

The built-in kinds are imported here; a deployment adds its own with the
TERRITORY_DEVICE_KIND_MODULES setting (importable module names), loaded by
`load_kind_modules` when a process starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from devices.declare import DeviceKind, KindSpec, all_kinds, all_specs, kind_spec, spec_of

# Declaration order is the order kinds are listed in (the built-in ones first).
from devices.kinds import water_meter  # isort: skip
from devices.kinds import waste_column  # isort: skip
from devices.kinds import parking_sensor  # isort: skip


def load_kind_modules(names: Iterable[str]) -> list[KindSpec]:
    """Import the modules declaring a deployment's own kinds (each calls `declare_kind`).
    Importing a module again does nothing, so calling this twice is harmless."""
    before = set(all_kinds())
    for name in names:
        importlib.import_module(name)
    return [s for s in all_specs() if s.kind not in before]


__all__ = [
    "DeviceKind",
    "KindSpec",
    "all_kinds",
    "all_specs",
    "kind_spec",
    "load_kind_modules",
    "parking_sensor",
    "spec_of",
    "waste_column",
    "water_meter",
]
