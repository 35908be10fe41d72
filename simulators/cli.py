"""Command-line options for the fleet simulator; the host CLI supplies where the platform is.

`add_arguments` only adds options, so the platform's own CLI can mount the simulator as a
sub-command and pass its configured API URL, admin key and MQTT URL to `run`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType

from devices.kinds import DeviceKind
from simulators.behaviour import ALL_KINDS, PARIS, build_fleet
from simulators.faults import ALL_FAULTS, NATIVE, FaultInjector, FaultType, Wire
from simulators.fleet import (
    PublisherError,
    RegistrationError,
    SimulationConfig,
    SimulationReport,
    parse_mqtt_url,
    register_devices,
    simulate,
)
from simulators.lorawan import Network, NetworkServerWire, WireFormat, bind_lorawan

# Leaves room for "-wm-0001" (and more digits) within the platform's 64-character device id.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


def _kinds(value: str) -> list[DeviceKind]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    valid = [k.value for k in ALL_KINDS]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown kind(s) {', '.join(bad) or '(none)'}; choose from {', '.join(valid)}"
        )
    return [DeviceKind(n) for n in dict.fromkeys(names)]


def _fault_types(value: str) -> list[FaultType]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    valid = [f.value for f in ALL_FAULTS]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault type(s) {', '.join(bad) or '(none)'}; choose from {', '.join(valid)}"
        )
    return [FaultType(n) for n in dict.fromkeys(names)]


def _probability(value: str) -> float:
    try:
        p = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return p


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(value: str) -> int | float:
        try:
            v = kind(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
        if v < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return v

    return parse


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*$")
_UNIT_HOURS = {"d": 24.0, "h": 1.0, "m": 1 / 60, "": 1.0}


def parse_duration_hours(value: str) -> float:
    """`30d`, `12h`, `90m` or a bare number of hours (`0` disables) -> hours."""
    m = _DURATION.match(value.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (use e.g. 30d, 12h, 90m or 0)")
    return float(m.group(1)) * _UNIT_HOURS[m.group(2)]


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 time; without an offset it is read as Paris local time."""
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=PARIS)


def _prefix(value: str) -> str:
    if not _PREFIX.match(value):
        raise argparse.ArgumentTypeError(
            "must start with a letter or digit and use only letters, digits, '_', '.', '-' "
            "(at most 48 characters)"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options (the host CLI adds the platform's URLs and key)."""
    all_kinds = ",".join(k.value for k in ALL_KINDS)
    all_faults = ",".join(f.value for f in ALL_FAULTS)
    g = parser.add_argument_group("fleet")
    g.add_argument(
        "--kinds",
        type=_kinds,
        default=list(ALL_KINDS),
        help=f"comma-separated device kinds to simulate (default: {all_kinds})",
    )
    g.add_argument(
        "--devices",
        type=_non_negative(int),
        default=20,
        metavar="N",
        help="devices per kind (default: 20)",
    )
    g.add_argument(
        "--water-meters",
        type=_non_negative(int),
        default=None,
        metavar="N",
        help="water meters (default: --devices)",
    )
    g.add_argument(
        "--waste-columns",
        type=_non_negative(int),
        default=None,
        metavar="N",
        help="waste columns (default: --devices)",
    )
    g.add_argument(
        "--parking-spaces",
        type=_non_negative(int),
        default=None,
        metavar="N",
        help="parking spaces (default: --devices)",
    )
    g.add_argument(
        "--seed",
        default="0",
        help="seed for the fleet and its behaviour: same seed, same devices and "
        "same readings for the same timestamps (default: 0)",
    )
    g.add_argument(
        "--id-prefix",
        type=_prefix,
        default="sim",
        help="device ids are PREFIX-wm-0001, PREFIX-wc-0001, PREFIX-ps-0001 (default: sim)",
    )
    g.add_argument(
        "--epoch",
        type=parse_timestamp,
        default=None,
        metavar="TIME",
        help="when the simulated world starts (leaks, fills and parking are drawn "
        "from it); with the seed and sizes it fixes the ground truth "
        "(simulators.truth) (default: the start of --history, or now)",
    )
    g.add_argument(
        "--no-register",
        action="store_true",
        help="do not register the devices through the API first",
    )
    g = parser.add_argument_group("history")
    g.add_argument(
        "--history",
        type=parse_duration_hours,
        default=0.0,
        metavar="DURATION",
        dest="history_hours",
        help="first publish every reading the fleet would have sent over this "
        "past period (e.g. 30d, 12h; 0 = none), with past device timestamps, as "
        "fast as the broker acknowledges (default: 0)",
    )
    g.add_argument(
        "--backfill-hours", type=_non_negative(float), dest="history_hours", help=argparse.SUPPRESS
    )  # the option's former name
    g.add_argument(
        "--history-end",
        type=parse_timestamp,
        default=None,
        metavar="TIME",
        help="the history ends at TIME instead of now (reproducible runs)",
    )
    g.add_argument(
        "--history-rate",
        type=_non_negative(float),
        default=0.0,
        metavar="R",
        help="at most R history publishes per second; 0 = as fast as the broker "
        "acknowledges (default: 0)",
    )
    g.add_argument(
        "--no-live", action="store_true", help="stop after the history instead of continuing live"
    )
    g = parser.add_argument_group("publishing")
    g.add_argument(
        "--pace",
        choices=("rate", "schedule"),
        default="rate",
        help="live publishing: rate = the devices in turn at --rate (a load "
        "generator); schedule = each device on its own schedule in real time "
        "(hourly meters hourly, parking on change and every 3 h) (default: rate)",
    )
    g.add_argument(
        "--rate",
        type=_non_negative(float),
        default=20.0,
        metavar="R",
        help="total live MQTT publishes per second, spread evenly over the devices; "
        "0 = as fast as the broker acknowledges; a cap with --pace schedule "
        "(default: 20)",
    )
    g.add_argument(
        "--duration",
        type=_non_negative(float),
        default=0.0,
        metavar="S",
        help="seconds of live publishing after the history; 0 = until Ctrl-C (default: 0)",
    )
    g.add_argument(
        "--count",
        type=_non_negative(int),
        default=0,
        metavar="M",
        help="stop after M publishes in all, history included (held-back "
        "out-of-order messages still go out after); 0 = no limit",
    )
    g.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default: 1)")
    g.add_argument(
        "--format",
        type=WireFormat,
        choices=list(WireFormat),
        default=WireFormat.NATIVE,
        help="native: JSON on devices/<id>/telemetry; chirpstack / tts: each reading "
        "encoded as a real device's LoRaWAN payload (water: Kamstrup flowIQ 2200, "
        "waste: Milesight EM310-UDL, parking: Bosch PLS) in a ChirpStack v4 or The "
        "Things Stack v3 uplink on that network server's topic; devices are "
        "registered with a DevEUI and a decoder (default: native)",
    )
    g = parser.add_argument_group("fault injection")
    g.add_argument(
        "--faults",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a message carries a fault, spread evenly over "
        "--fault-types (default: 0)",
    )
    g.add_argument(
        "--fault-types",
        type=_fault_types,
        default=list(ALL_FAULTS),
        metavar="TYPES",
        help=f"comma-separated fault types (default: {all_faults})",
    )


def fleet_sizes(args: argparse.Namespace) -> dict[DeviceKind, int]:
    """Devices per kind: --devices, overridden per kind."""
    options = {
        DeviceKind.WATER_METER: "water_meters",
        DeviceKind.WASTE_COLUMN: "waste_columns",
        DeviceKind.PARKING_SENSOR: "parking_spaces",
    }
    sizes: dict[DeviceKind, int] = {}
    for kind in args.kinds:
        n = getattr(args, options[kind], None)
        sizes[kind] = int(n if n is not None else args.devices)
    return sizes


def run(args: argparse.Namespace, *, api_url: str, admin_key: str, mqtt_url: str) -> int:
    """Register (unless --no-register) and publish; 0 when every publish was acknowledged.

    The first Ctrl-C (or SIGTERM) stops publishing and waits for outstanding PUBACKs; a second
    one aborts.
    """
    try:
        endpoint = parse_mqtt_url(mqtt_url)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    counts = fleet_sizes(args)
    history_end: datetime | None = getattr(args, "history_end", None)
    history_hours = float(getattr(args, "history_hours", 0.0) or 0.0)
    now = datetime.now(PARIS)
    if history_end is not None and history_end > now + timedelta(minutes=5):
        print(
            "simulate: --history-end is in the future; the platform refuses readings "
            "from the future",
            file=sys.stderr,
        )
        return 2
    end = history_end or now
    epoch: datetime = getattr(args, "epoch", None) or (
        end.astimezone(UTC) - timedelta(hours=history_hours)
    ).astimezone(end.tzinfo)
    devices = build_fleet(args.kinds, counts, seed=args.seed, id_prefix=args.id_prefix, epoch=epoch)
    if not devices:
        print("simulate: no devices to simulate (--devices 0)", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k.value} {n}" for k, n in counts.items())
    print(
        f"fleet: {sizes}; seed {args.seed!r}, id prefix {args.id_prefix!r}, world epoch "
        f"{epoch.isoformat()} (simulators.truth.ground_truth replays it)",
        file=sys.stderr,
    )
    wire_format = WireFormat(getattr(args, "format", WireFormat.NATIVE))
    wire: Wire = NATIVE
    if wire_format is not WireFormat.NATIVE:
        bind_lorawan(devices)
        wire = NetworkServerWire(
            wire_format, devices, seed=args.seed, network=Network(application=args.id_prefix)
        )
    report = SimulationReport(devices=len(devices))
    if not args.no_register:
        print(f"registering {len(devices)} devices at {api_url} ...", file=sys.stderr)
        try:
            result = register_devices(
                [d.registration for d in devices], api_url=api_url, admin_key=admin_key
            )
        except RegistrationError as exc:
            print(f"simulate: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("simulate: interrupted during registration", file=sys.stderr)
            return 130
        report.registered, report.already_registered = result.created, result.existing
        print(f"registered {result.created} new, {result.existing} already there", file=sys.stderr)

    if isinstance(wire, NetworkServerWire):
        print(
            f"publishing as a {wire_format} network server, e.g. "
            f"{wire.topic(devices[0].device_id)}",
            file=sys.stderr,
        )
    injector = (
        FaultInjector(args.faults, args.fault_types, seed=args.seed, wire=wire)
        if args.faults > 0
        else None
    )
    config = SimulationConfig(
        rate=args.rate,
        duration_s=args.duration,
        count=args.count,
        history_hours=history_hours,
        history_end=end,
        history_rate=getattr(args, "history_rate", 0.0),
        live=not getattr(args, "no_live", False),
        pace=getattr(args, "pace", "rate"),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "\nstopping: waiting for outstanding acknowledgements (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    # SIGTERM too: `territory run` stops its simulator that way, and the acks should still be
    # waited for rather than the process dying with messages in flight.
    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if in_main
        else {}
    )
    try:
        simulate(
            devices,
            endpoint,
            config,
            injector=injector,
            stop=stop,
            qos=args.qos,
            client_id=f"{args.id_prefix}-fleet-{os.getpid()}",
            report=report,
            wire=wire,
        )
    except PublisherError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsimulate: aborted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


__all__ = ["add_arguments", "fleet_sizes", "parse_duration_hours", "parse_timestamp", "run"]
