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
from types import FrameType

from devices.kinds import DeviceKind
from simulators.behaviour import ALL_KINDS, build_fleet
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
            f"unknown kind(s) {', '.join(bad) or '(none)'}; choose from {', '.join(valid)}")
    return [DeviceKind(n) for n in dict.fromkeys(names)]


def _fault_types(value: str) -> list[FaultType]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    valid = [f.value for f in ALL_FAULTS]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault type(s) {', '.join(bad) or '(none)'}; choose from {', '.join(valid)}")
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


def _prefix(value: str) -> str:
    if not _PREFIX.match(value):
        raise argparse.ArgumentTypeError(
            "must start with a letter or digit and use only letters, digits, '_', '.', '-' "
            "(at most 48 characters)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options (the host CLI adds the platform's URLs and key)."""
    all_kinds = ",".join(k.value for k in ALL_KINDS)
    all_faults = ",".join(f.value for f in ALL_FAULTS)
    g = parser.add_argument_group("fleet")
    g.add_argument("--kinds", type=_kinds, default=list(ALL_KINDS),
                   help=f"comma-separated device kinds to simulate (default: {all_kinds})")
    g.add_argument("--devices", type=_non_negative(int), default=20, metavar="N",
                   help="devices per kind (default: 20)")
    g.add_argument("--seed", default="0",
                   help="seed for the fleet and its behaviour: same seed, same devices and "
                   "same readings for the same timestamps (default: 0)")
    g.add_argument("--id-prefix", type=_prefix, default="sim",
                   help="device ids are PREFIX-wm-0001, PREFIX-wc-0001, PREFIX-ps-0001 "
                   "(default: sim)")
    g.add_argument("--no-register", action="store_true",
                   help="do not register the devices through the API first")
    g = parser.add_argument_group("publishing")
    g.add_argument("--rate", type=_non_negative(float), default=20.0, metavar="R",
                   help="total MQTT publishes per second, spread evenly over the devices; "
                   "0 = as fast as the broker acknowledges (default: 20)")
    g.add_argument("--duration", type=_non_negative(float), default=0.0, metavar="S",
                   help="seconds of live publishing after the backfill; 0 = until Ctrl-C "
                   "(default: 0)")
    g.add_argument("--count", type=_non_negative(int), default=0, metavar="M",
                   help="stop after M publishes in all, backfill included (held-back "
                   "out-of-order messages still go out after); 0 = no limit")
    g.add_argument("--backfill-hours", type=_non_negative(float), default=0.0, metavar="H",
                   help="first publish H hours of history (one reading per device per 15 min "
                   "of simulated time, past timestamps) at --rate (default: 0)")
    g.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default: 1)")
    g.add_argument("--format", type=WireFormat, choices=list(WireFormat),
                   default=WireFormat.NATIVE,
                   help="native: JSON on devices/<id>/telemetry; chirpstack / tts: each reading "
                   "encoded as a real device's LoRaWAN payload (water: Kamstrup flowIQ 2200, "
                   "waste: Milesight EM310-UDL, parking: Bosch PLS) in a ChirpStack v4 or The "
                   "Things Stack v3 uplink on that network server's topic; devices are "
                   "registered with a DevEUI and a decoder (default: native)")
    g = parser.add_argument_group("fault injection")
    g.add_argument("--faults", type=_probability, default=0.0, metavar="P",
                   help="probability that a message carries a fault, spread evenly over "
                   "--fault-types (default: 0)")
    g.add_argument("--fault-types", type=_fault_types, default=list(ALL_FAULTS),
                   metavar="TYPES", help=f"comma-separated fault types (default: {all_faults})")


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
    devices = build_fleet(args.kinds, args.devices, seed=args.seed, id_prefix=args.id_prefix)
    if not devices:
        print("simulate: no devices to simulate (--devices 0)", file=sys.stderr)
        return 2
    wire_format = WireFormat(getattr(args, "format", WireFormat.NATIVE))
    wire: Wire = NATIVE
    if wire_format is not WireFormat.NATIVE:
        bind_lorawan(devices)
        wire = NetworkServerWire(wire_format, devices, seed=args.seed,
                                 network=Network(application=args.id_prefix))
    report = SimulationReport(devices=len(devices))
    if not args.no_register:
        print(f"registering {len(devices)} devices at {api_url} ...", file=sys.stderr)
        try:
            result = register_devices([d.registration for d in devices],
                                      api_url=api_url, admin_key=admin_key)
        except RegistrationError as exc:
            print(f"simulate: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("simulate: interrupted during registration", file=sys.stderr)
            return 130
        report.registered, report.already_registered = result.created, result.existing
        print(f"registered {result.created} new, {result.existing} already there",
              file=sys.stderr)

    if isinstance(wire, NetworkServerWire):
        print(f"publishing as a {wire_format} network server, e.g. "
              f"{wire.topic(devices[0].device_id)}", file=sys.stderr)
    injector = (FaultInjector(args.faults, args.fault_types, seed=args.seed, wire=wire)
                if args.faults > 0 else None)
    config = SimulationConfig(rate=args.rate, duration_s=args.duration, count=args.count,
                              backfill_hours=args.backfill_hours)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping: waiting for outstanding acknowledgements (Ctrl-C again to abort)",
              file=sys.stderr)

    # SIGTERM too: `territory run` stops its simulator that way, and the acks should still be
    # waited for rather than the process dying with messages in flight.
    in_main = threading.current_thread() is threading.main_thread()
    previous = ({sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                if in_main else {})
    try:
        simulate(devices, endpoint, config, injector=injector, stop=stop, qos=args.qos,
                 client_id=f"{args.id_prefix}-fleet-{os.getpid()}", report=report, wire=wire)
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


__all__ = ["add_arguments", "run"]
