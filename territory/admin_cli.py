"""`territory devices ...`, `territory decoders`, `territory kinds`, `territory waste list`,
`territory alerts ...`, `territory tenants ...` and `territory keys ...`: the command line.

A thin client of the HTTP API (TERRITORY_API_URL, TERRITORY_ADMIN_KEY), so the command line and
the API enforce exactly the same rules.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import httpx


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("devices", help="register and manage devices through the API")
    dsub = dev.add_subparsers(dest="devices_command", required=True)

    add = dsub.add_parser("add", help="register one device")
    add.add_argument("id")
    add.add_argument(
        "--kind",
        required=True,
        help="water_meter, waste_column, parking_sensor, or a kind the deployment declares "
        "(`territory kinds` lists them; the API checks)",
    )
    add.add_argument("--label", default="")
    add.add_argument("--group")
    add.add_argument("--lat", type=float)
    add.add_argument("--lon", type=float)
    add.add_argument("--dev-eui")
    add.add_argument("--wmbus-id")
    add.add_argument("--decoder")
    add.add_argument("--tenant", help="the device's tenant (an admin key; default: `default`)")
    add.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kind attribute, e.g. --attr depth_mm=1800 (repeatable)",
    )

    imp = dsub.add_parser("import", help="register many devices from a CSV or JSON file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="validate only, create nothing")

    show = dsub.add_parser("show", help="print one device")
    show.add_argument("id")

    ls = dsub.add_parser("list", help="list devices")
    ls.add_argument("--kind")
    ls.add_argument("--group")
    ls.add_argument("--status", choices=["active", "decommissioned"])

    rm = dsub.add_parser("decommission", help="decommission a device (its data is kept)")
    rm.add_argument("id")

    sub.add_parser("decoders", help="list the payload decoders a device can be bound to")
    sub.add_parser("kinds", help="list the device kinds, their reading fields and attributes")

    waste = sub.add_parser("waste", help="waste collection: the columns to empty")
    wsub = waste.add_subparsers(dest="waste_command", required=True)
    wl = wsub.add_parser("list", help="the day's collection list, most urgent first")
    wl.add_argument("--date", help="YYYY-MM-DD (default: today, Europe/Paris)")
    wl.add_argument("--stream", help="waste stream, e.g. glass (default: all)")
    wl.add_argument("--group", help="collection round (default: all)")
    wl.add_argument("--csv", action="store_true", help="CSV with a header instead of a table")
    al = sub.add_parser("alerts", help="list and acknowledge alerts through the API")
    asub = al.add_subparsers(dest="alerts_command", required=True)
    als = asub.add_parser("list", help="list alerts, newest first")
    als.add_argument("--status", choices=["open", "acknowledged", "cleared", "active"])
    als.add_argument("--type")
    als.add_argument("--device")
    als.add_argument("--group")
    als.add_argument("--since", help="opened at or after (RFC 3339 with offset)")
    als.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ack = asub.add_parser("ack", help="acknowledge an alert")
    ack.add_argument("id", type=int)
    ack.add_argument("--by", required=True, help="who takes it in hand")

    ten = sub.add_parser("tenants", help="tenants (admin key)")
    tsub = ten.add_subparsers(dest="tenants_command", required=True)
    tadd = tsub.add_parser("add", help="create a tenant")
    tadd.add_argument("id", help="lowercase letters, digits, '-' and '_'")
    tadd.add_argument("--name", required=True)
    tsub.add_parser("list", help="list tenants")

    keys = sub.add_parser("keys", help="API keys (admin key)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key; it is printed once")
    kc.add_argument(
        "--role", required=True, choices=["admin", "integrator", "operator", "crew", "viewer"]
    )
    kc.add_argument("--tenant", help="required for every role but admin")
    kc.add_argument("--expires", help="expiry, ISO 8601 with an offset (default: never)")
    kc.add_argument("--label", default="", help="who or what holds the key")
    ksub.add_parser("list", help="list keys (never the keys themselves)")
    kr = ksub.add_parser("revoke", help="revoke a key, at once")
    kr.add_argument("id", help="the key's id (key_<prefix>)")


def _attr_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _fail(r: httpx.Response) -> int:
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text
    print(f"error {r.status_code}: {json.dumps(detail, ensure_ascii=False)}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace, *, api_url: str, admin_key: str) -> int:
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as client:
            return _run(args, client)
    except httpx.HTTPError as exc:
        print(f"cannot reach the API at {api_url}: {exc}", file=sys.stderr)
        return 1


def _waste_list(args: argparse.Namespace, client: httpx.Client) -> int:
    params = {k: v for k in ("date", "stream", "group") if (v := getattr(args, k))}
    r = client.get("/waste/collection-list", params=params)
    if r.status_code != 200:
        return _fail(r)
    body = r.json()
    fields = [
        "device_id",
        "reason",
        "fill_pct",
        "rate_pct_per_day",
        "eta_threshold",
        "lat",
        "lon",
        "last_emptied",
        "reading_age_s",
    ]
    if args.csv:
        out = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
        out.writeheader()
        for item in body["items"]:
            out.writerow({k: "" if item[k] is None else item[k] for k in fields})
        return 0

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def when(iso: str | None) -> str:
        return "-" if iso is None else iso[:16].replace("T", " ")

    print(f"{body['date']}: {len(body['items'])} columns to empty")
    print(f"{'column':24} {'reason':6} {'fill %':>6} {'%/day':>6} {'reaches threshold':17} place")
    for it in body["items"]:
        where = f"{it['lat']:.5f},{it['lon']:.5f}" if it["lat"] is not None else "-"
        print(
            f"{it['device_id']:24} {it['reason']:6} {num(it['fill_pct'], '.0f'):>6} "
            f"{num(it['rate_pct_per_day'], '.1f'):>6} {when(it['eta_threshold']):17} {where}"
        )
    return 0


def _alerts(args: argparse.Namespace, client: httpx.Client) -> int:
    if args.alerts_command == "ack":
        r = client.post(f"/alerts/{args.id}/acknowledge", json={"by": args.by})
        if r.status_code != 200:
            return _fail(r)
        a = r.json()
        who = a["acknowledged_by"]
        print(f"alert {a['id']} ({a['type']} on {a['device_id']}) acknowledged by {who}")
        return 0
    params = {
        k: v
        for k, v in (
            ("status", args.status),
            ("type", args.type),
            ("device_id", args.device),
            ("group", args.group),
            ("since", args.since),
        )
        if v
    }
    left = args.limit
    cursor = None
    while left > 0:
        page_params = {**params, "limit": min(left, 1000), **({"cursor": cursor} if cursor else {})}
        r = client.get("/alerts", params=page_params)
        if r.status_code != 200:
            return _fail(r)
        page = r.json()
        for a in page["items"]:
            print(
                f"{a['id']:>8} {a['status']:12} {a['severity']:8} {a['type']:12} "
                f"{a['device_id']:32} {a['opened_at']}  x{a['count']}"
            )
        left -= len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    return 0


def _tenants(args: argparse.Namespace, client: httpx.Client) -> int:
    if args.tenants_command == "add":
        r = client.post("/tenants", json={"id": args.id, "name": args.name})
        if r.status_code != 201:
            return _fail(r)
        print(f"tenant {r.json()['id']} created")
        return 0
    r = client.get("/tenants")
    if r.status_code != 200:
        return _fail(r)
    for t in r.json():
        shared = ",".join(k for k, v in sorted(t["open_data"].items()) if v) or "-"
        print(f"{t['id']:32} {t['name']:40} open data: {shared}")
    return 0


def _keys(args: argparse.Namespace, client: httpx.Client) -> int:
    if args.keys_command == "create":
        body: dict[str, Any] = {"role": args.role, "label": args.label}
        if args.tenant:
            body["tenant"] = args.tenant
        if args.expires:
            body["expires_at"] = args.expires
        r = client.post("/keys", json=body)
        if r.status_code != 201:
            return _fail(r)
        k = r.json()
        print(k["key"])
        where = f"tenant {k['tenant']}" if k["tenant"] else "every tenant"
        print(
            f"{k['id']}: {k['role']} on {where}, expires {k['expires_at'] or 'never'}. "
            "The key is shown this once.",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "revoke":
        r = client.delete(f"/keys/{args.id}")
        if r.status_code != 200:
            return _fail(r)
        print(f"{r.json()['id']} revoked at {r.json()['revoked_at']}")
        return 0
    r = client.get("/keys")
    if r.status_code != 200:
        return _fail(r)
    for k in r.json():
        state = "revoked" if k["revoked_at"] else "active"
        print(
            f"{k['id']:14} {k['role']:10} {k['tenant'] or '*':24} {state:8} "
            f"expires {k['expires_at'] or 'never':26} {k['label']}"
        )
    return 0


def _run(args: argparse.Namespace, client: httpx.Client) -> int:
    if args.command == "tenants":
        return _tenants(args, client)
    if args.command == "keys":
        return _keys(args, client)
    if args.command == "waste":
        return _waste_list(args, client)
    if args.command == "alerts":
        return _alerts(args, client)
    if args.command == "kinds":
        r = client.get("/kinds")
        if r.status_code != 200:
            return _fail(r)
        for k in r.json():
            print(f"{k['kind']}: {k['description']}")
            for f in k["fields"]:
                unit = f" [{f['unit']}]" if f["unit"] else ""
                span = f" {f['min']}..{f['max']}" if f["min"] is not None else ""
                print(f"  {f['name']:16} {f['type']:6}{unit}{span}")
            names = ", ".join(k["attributes_schema"].get("properties", {}))
            print(f"  attributes: {names}")
        return 0
    if args.command == "decoders":
        r = client.get("/decoders")
        if r.status_code != 200:
            return _fail(r)
        for d in r.json():
            print(f"{d['name']:32} {d['kind']:15} {d['vendor']} {d['model']}")
        return 0
    cmd = args.devices_command
    if cmd == "add":
        body: dict[str, Any] = {"id": args.id, "kind": args.kind, "label": args.label}
        for key in ("group", "dev_eui", "wmbus_id", "decoder", "tenant"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        if args.lat is not None or args.lon is not None:
            body["location"] = {"lat": args.lat, "lon": args.lon}
        attrs = {}
        for item in args.attr:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"--attr wants KEY=VALUE, got {item!r}", file=sys.stderr)
                return 2
            attrs[key] = _attr_value(value)
        body["attributes"] = attrs
        r = client.post("/devices", json=body)
        if r.status_code != 201:
            return _fail(r)
        print(json.dumps(r.json(), indent=2, ensure_ascii=False))
        return 0
    if cmd == "import":
        path: Path = args.file
        ctype = "text/csv" if path.suffix.lower() == ".csv" else "application/json"
        r = client.post(
            "/devices/bulk",
            content=path.read_bytes(),
            headers={"Content-Type": ctype},
            params={"dry_run": "true"} if args.dry_run else None,
        )
        if r.status_code != 200:
            return _fail(r)
        report = r.json()
        verb = "would create" if report["dry_run"] else "created"
        print(f"{report['rows']} rows: {verb} {report['created']}, refused {len(report['errors'])}")
        for e in report["errors"]:
            where = f" [{e['field']}]" if e["field"] else ""
            print(f"  row {e['row']} ({e['id']}){where}: {e['message']}")
        return 1 if report["errors"] else 0
    if cmd in ("show", "decommission"):
        r = (
            client.get(f"/devices/{args.id}")
            if cmd == "show"
            else client.delete(f"/devices/{args.id}")
        )
        if r.status_code != 200:
            return _fail(r)
        print(json.dumps(r.json(), indent=2, ensure_ascii=False))
        return 0
    params = {
        k: v for k, v in (("kind", args.kind), ("group", args.group), ("status", args.status)) if v
    }
    cursor = None
    while True:
        r = client.get("/devices", params={**params, **({"cursor": cursor} if cursor else {})})
        if r.status_code != 200:
            return _fail(r)
        page = r.json()
        for d in page["items"]:
            print(f"{d['id']:32} {d['kind']:15} {d['status']:15} {d['group'] or ''}")
        cursor = page["next_cursor"]
        if not cursor:
            return 0
