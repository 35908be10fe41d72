"""A small walker for M-Bus application-layer data records (EN 13757-3).

Shared by decoders whose LoRaWAN payload carries M-Bus records (Kamstrup flowIQ 2200, Integra
AQUASTREAM).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from devices.decoders.util import undecodable

# --- M-Bus data records (EN 13757-3) ----------------------------------------------------------

# Data field (low nibble of the DIF) → (value length in bytes, BCD)
_DATA_FIELD: dict[int, tuple[int, bool]] = {
    0x0: (0, False),
    0x1: (1, False),
    0x2: (2, False),
    0x3: (3, False),
    0x4: (4, False),
    0x5: (4, False),  # 32-bit real
    0x6: (6, False),
    0x7: (8, False),
    0x8: (0, False),  # selection for readout
    0x9: (1, True),
    0xA: (2, True),
    0xB: (3, True),
    0xC: (4, True),
    0xE: (6, True),
}

FUNCTION_INSTANTANEOUS, FUNCTION_MAX, FUNCTION_MIN, FUNCTION_ERROR = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class MBusRecord:
    """One data record; `vif` is the first VIF byte without its extension bit."""

    dif: int
    function: int
    storage: int
    tariff: int
    subunit: int
    vif: int
    vif_extended: bool  # the VIF had its extension bit set (VIFEs follow, or 0xFD/0xFF tables)
    vifes: tuple[int, ...]  # VIFE bytes as sent (extension bit included)
    data: bytes  # the value bytes (for a variable-length field, without its length byte)
    lvar: bool

    @property
    def bcd(self) -> bool:
        return _DATA_FIELD.get(self.dif & 0x0F, (0, False))[1]

    def vife_codes(self) -> tuple[int, ...]:
        return tuple(v & 0x7F for v in self.vifes)


def mbus_records(data: bytes, what: str) -> list[MBusRecord]:
    """Walk the data records of an unencrypted M-Bus application layer."""
    out: list[MBusRecord] = []
    i = 0
    n = len(data)
    while i < n:
        dif = data[i]
        i += 1
        if dif == 0x2F:  # idle filler
            continue
        if dif & 0x0F == 0x0F:
            # 0x0F/0x1F: manufacturer-specific data up to the end; 0x7F: global readout.
            break
        storage = (dif >> 6) & 0x01
        function = (dif >> 4) & 0x03
        tariff = 0
        subunit = 0
        ext = dif & 0x80
        k = 0
        while ext:
            if i >= n or k >= 10:
                raise undecodable(f"{what}: data record cut inside its DIFE chain")
            dife = data[i]
            i += 1
            storage |= (dife & 0x0F) << (1 + 4 * k)
            tariff |= ((dife >> 4) & 0x03) << (2 * k)
            subunit |= ((dife >> 6) & 0x01) << k
            ext = dife & 0x80
            k += 1
        if i >= n:
            raise undecodable(f"{what}: data record without a VIF at byte {i}")
        vif = data[i]
        i += 1
        vifes: list[int] = []
        if vif & 0x7F == 0x7C:  # plain-text VIF: length byte + ASCII unit, before any VIFE
            if i >= n or i + 1 + data[i] > n:
                raise undecodable(f"{what}: plain-text VIF cut short")
            i += 1 + data[i]
        more = vif & 0x80
        while more:
            if i >= n or len(vifes) >= 10:
                raise undecodable(f"{what}: data record cut inside its VIFE chain")
            vifes.append(data[i])
            more = data[i] & 0x80
            i += 1
        field = dif & 0x0F
        lvar = field == 0x0D
        if lvar:
            if i >= n:
                raise undecodable(f"{what}: variable-length record without its length byte")
            size = _lvar_size(data[i], what)
            i += 1
        else:
            size = _DATA_FIELD[field][0]
        if i + size > n:
            raise undecodable(
                f"{what}: record DIF {dif:02X} VIF {vif:02X} needs {size} bytes, {n - i} left"
            )
        out.append(
            MBusRecord(
                dif=dif,
                function=function,
                storage=storage,
                tariff=tariff,
                subunit=subunit,
                vif=vif & 0x7F,
                vif_extended=bool(vif & 0x80),
                vifes=tuple(vifes),
                data=bytes(data[i : i + size]),
                lvar=lvar,
            )
        )
        i += size
    return out


def _lvar_size(lvar: int, what: str) -> int:
    if lvar < 0xC0:
        return lvar  # characters / raw bytes
    if lvar < 0xE0:
        return lvar & 0x0F  # positive (0xC_) or negative (0xD_) BCD, bytes
    if lvar < 0xF0:
        return lvar - 0xE0  # binary number
    if lvar <= 0xF4:
        return 4 * (lvar - 0xEC)  # 0xF0..0xF4: 16..64 bytes
    raise undecodable(f"{what}: reserved LVAR length code 0x{lvar:02X}")


def int_le(raw: bytes, *, signed: bool) -> int:
    return int.from_bytes(raw, "little", signed=signed)


def mbus_integer(rec: MBusRecord) -> int | None:
    """The record's value as an integer (type A BCD or type B signed binary), None if invalid."""
    if not rec.data:
        return None
    if rec.bcd:
        digits = rec.data[::-1].hex()
        negative = digits.startswith("f")
        if negative:
            digits = digits[1:]
        if not digits.isdigit():
            return None
        value = int(digits)
        return -value if negative else value
    if len(rec.data) > 8 or rec.dif & 0x0F == 0x5:  # real numbers are not integers
        return None
    value = int_le(rec.data, signed=True)
    if value == -(1 << (8 * len(rec.data) - 1)):  # type B "invalid" marker
        return None
    return value


def scaled(raw: int, exponent: int) -> float:
    """raw x 10^exponent, rounded the way the decimal digits read (1016 x 10^-3 → 1.016)."""
    if exponent < 0:
        return raw / int(10 ** (-exponent))
    return float(raw * int(10**exponent))


def volume_exponent(rec: MBusRecord) -> int | None:
    """Exponent (m³) of a volume VIF 0x10-0x17, else None."""
    if 0x10 <= rec.vif <= 0x17:
        return (rec.vif & 0x07) - 6
    return None


def flow_exponent(rec: MBusRecord) -> int | None:
    """Exponent (m³/h) of a volume-flow VIF 0x38-0x3F, else None."""
    if 0x38 <= rec.vif <= 0x3F:
        return (rec.vif & 0x07) - 6
    return None


def flow_temperature_exponent(rec: MBusRecord) -> int | None:
    """Exponent (°C) of a flow-temperature VIF 0x58-0x5B, else None."""
    if 0x58 <= rec.vif <= 0x5B:
        return (rec.vif & 0x03) - 3
    return None


def mbus_datetime(rec: MBusRecord) -> datetime | None:
    """Type F (CP32, VIF 6D, 4 bytes), type I (CP48, VIF 6D, 6 bytes) or type G (CP16, VIF 6C),
    read as UTC (see the module docstring); None when the record flags it invalid."""
    raw = rec.data
    try:
        if rec.vif == 0x6D and len(raw) == 4:
            if raw[0] & 0x80:  # IV: time invalid
                return None
            minute = raw[0] & 0x3F
            hour = raw[1] & 0x1F
            day = raw[2] & 0x1F
            month = raw[3] & 0x0F
            year = ((raw[2] & 0xE0) >> 5) | ((raw[3] & 0xF0) >> 1)
            hundred = (raw[1] >> 5) & 0x03
            return datetime(1900 + 100 * hundred + year, month, day, hour, minute, tzinfo=UTC)
        if rec.vif == 0x6D and len(raw) == 6:
            if raw[1] & 0x80:
                return None
            year = 2000 + (((raw[3] & 0xE0) >> 5) | ((raw[4] & 0xF0) >> 1))
            return datetime(
                year,
                raw[4] & 0x0F,
                raw[3] & 0x1F,
                raw[2] & 0x1F,
                raw[1] & 0x3F,
                raw[0] & 0x3F,
                tzinfo=UTC,
            )
        if rec.vif == 0x6C and len(raw) == 2:
            if raw == b"\xff\xff":
                return None
            year = 2000 + (((raw[0] & 0xE0) >> 5) | ((raw[1] & 0xF0) >> 1))
            return datetime(year, raw[1] & 0x0F, raw[0] & 0x1F, tzinfo=UTC)
    except ValueError:  # day 0, month 13, ...: not a date
        return None
    return None


def is_datetime(rec: MBusRecord) -> bool:
    return rec.vif in (0x6C, 0x6D) and not rec.vifes


# --- Kamstrup ---------------------------------------------------------------------------------
