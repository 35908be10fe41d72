"""Devices behind LoRaWAN network servers and wM-Bus gateways, through the real ingest."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Publisher, wait_for

pytestmark = pytest.mark.integration

EM310_TILT = bytes.fromhex("01755C03824408040001")  # battery 92 %, distance 2116 mm, tilted


def chirpstack(
    eui: str,
    data: bytes,
    *,
    port: int = 85,
    fcnt: int = 7,
    time: str = "2026-11-25T07:47:05.404859+00:00",
    **extra: Any,
) -> bytes:
    msg = {
        "time": time,
        "deviceInfo": {"devEui": eui},
        "fCnt": fcnt,
        "fPort": port,
        "data": base64.b64encode(data).decode(),
        "rxInfo": [
            {"gatewayId": "7076ff0000000001", "rssi": -112, "snr": -3.5},
            {"gatewayId": "7076ff0000000009", "rssi": -87, "snr": 9.0},
        ],
        **extra,
    }
    return json.dumps(msg).encode()


def tts(
    eui: str,
    data: bytes | None,
    *,
    port: int = 85,
    fcnt: int = 7,
    received_at: str = "2026-11-25T07:47:05.404859Z",
    decoded: Any = None,
) -> bytes:
    up: dict[str, Any] = {
        "f_port": port,
        "f_cnt": fcnt,
        "received_at": received_at,
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "ergue-gw", "eui": "7076FF0000000003"},
                "rssi": -99,
                "snr": 4.25,
            }
        ],
    }
    if data is not None:
        up["frm_payload"] = base64.b64encode(data).decode()
    if decoded is not None:
        up["decoded_payload"] = decoded
    return json.dumps(
        {"end_device_ids": {"device_id": "x", "dev_eui": eui}, "uplink_message": up}
    ).encode()


def cs_topic(eui: str) -> str:
    return f"application/quimper/device/{eui}/event/up"


def tts_topic() -> str:
    return "v3/quimper@ttn/devices/x/up"


def register(api: TestClient, **body: Any) -> dict[str, Any]:
    r = api.post("/devices", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def register_em310(api: TestClient, dev: str, eui: str) -> None:
    """A Milesight EM310-UDL bin sensor on a 2.5 m column, bound by its DevEUI."""
    register(
        api,
        id=dev,
        kind="waste_column",
        dev_eui=eui,
        decoder="milesight-em310-udl",
        attributes={"depth_mm": 2500},
    )


def readings(api: TestClient, dev: str) -> list[dict[str, Any]]:
    return api.get(f"/devices/{dev}/readings").json()["items"]  # type: ignore[no-any-return]


def rejected(api: TestClient, **params: str) -> list[dict[str, Any]]:
    return api.get("/rejected", params=params).json()["items"]  # type: ignore[no-any-return]


def eui_for(uid: str, n: int) -> str:
    return f"{n:02x}{uid}".ljust(16, "0")[:16]


@pytest.mark.usefixtures("ingest")
class TestGateways:
    def test_em310_through_chirpstack_and_tts_gives_the_same_fill(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        a, b = eui_for(uid, 1), eui_for(uid, 2)
        attrs = {"depth_mm": 2500, "waste_stream": "residual"}
        for dev, eui in ((f"em-cs-{uid}", a), (f"em-tts-{uid}", b)):
            register(
                api,
                id=dev,
                kind="waste_column",
                dev_eui=eui.upper(),
                decoder="milesight-em310-udl",
                attributes=attrs,
            )
        publisher.publish(cs_topic(a), chirpstack(a, EM310_TILT))
        publisher.publish(tts_topic(), tts(b, EM310_TILT))
        via_cs = wait_for(lambda: readings(api, f"em-cs-{uid}"))[0]
        via_tts = wait_for(lambda: readings(api, f"em-tts-{uid}"))[0]
        assert via_cs["values"] == via_tts["values"]
        assert via_cs["values"]["distance_mm"] == 2116
        assert via_cs["values"]["fill_pct"] == pytest.approx((2500 - 2116) / 2500 * 100, abs=0.05)
        assert via_cs["values"]["battery_pct"] == 92
        assert via_cs["values"]["alarms"] == ["tilt"]
        assert via_cs["ts"] == via_tts["ts"] == "2026-11-25T07:47:05.404859Z"
        # Link quality: the gateway that heard the frame best.
        assert via_cs["radio"] == {
            "rssi_dbm": -87,
            "snr_db": 9.0,
            "frame_counter": 7,
            "gateway_id": "7076ff0000000009",
        }
        assert via_tts["radio"] == {
            "rssi_dbm": -99,
            "snr_db": 4.25,
            "frame_counter": 7,
            "gateway_id": "7076ff0000000003",
        }

    def test_network_server_retransmission_is_stored_once(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        eui = eui_for(uid, 3)
        dev = f"em-rt-{uid}"
        register_em310(api, dev, eui)
        frame = chirpstack(eui, EM310_TILT, fcnt=41)
        for _ in range(3):
            publisher.publish(cs_topic(eui), frame)
        publisher.publish(
            cs_topic(eui), chirpstack(eui, EM310_TILT, fcnt=42, time="2026-11-25T08:47:05+00:00")
        )
        wait_for(lambda: len(readings(api, dev)) == 2)
        assert [r["radio"]["frame_counter"] for r in readings(api, dev)] == [41, 42]

    def test_network_server_decoded_object_used_when_no_decoder_is_bound(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        eui = eui_for(uid, 4)
        dev = f"pk-obj-{uid}"
        register(api, id=dev, kind="parking_sensor", dev_eui=eui)
        publisher.publish(
            tts_topic(), tts(eui, b"\x01", port=1, decoded={"occupied": True, "temperature": 11})
        )
        reading = wait_for(lambda: readings(api, dev))[0]
        assert reading["values"]["occupied"] is True
        assert reading["values"]["temperature_c"] == 11

    def test_our_decoder_wins_over_the_network_servers_object(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        eui = eui_for(uid, 5)
        dev = f"em-win-{uid}"
        register_em310(api, dev, eui)
        publisher.publish(
            cs_topic(eui), chirpstack(eui, EM310_TILT, object={"distance": 999, "battery": 1})
        )
        reading = wait_for(lambda: readings(api, dev))[0]
        assert reading["values"]["distance_mm"] == 2116
        assert reading["values"]["battery_pct"] == 92

    def test_wmbusmeters_json(self, api: TestClient, publisher: Publisher, uid: str) -> None:
        dev, meter = f"wmb-{uid}", uid[:8]
        register(api, id=dev, kind="water_meter", wmbus_id=meter, decoder="wmbusmeters")
        telegram = {
            "_": "telegram",
            "media": "cold water",
            "meter": "multical21",
            "id": meter,
            "total_m3": 6.388,
            "current_status": "DRY",
            "timestamp": "2026-11-25T09:07:22Z",
        }
        publisher.publish(f"wmbusmeters/{meter}", json.dumps(telegram))
        reading = wait_for(lambda: readings(api, dev))[0]
        assert reading["values"]["index_m3"] == 6.388
        assert reading["values"]["alarms"] == ["dry"]
        assert reading["ts"] == "2026-11-25T09:07:22Z"

    def test_each_gateway_rejection_reason(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        known, bare, stranger = eui_for(uid, 6), eui_for(uid, 7), eui_for(uid, 8)
        register_em310(api, f"em-rej-{uid}", known)
        register(api, id=f"pk-bare-{uid}", kind="parking_sensor", dev_eui=bare)
        register(
            api,
            id=f"pk-hot-{uid}",
            kind="parking_sensor",
            dev_eui=eui_for(uid, 9),
            decoder="dingtek-do202",
        )
        do202_hot = bytes.fromhex("800032021706B4000001610010FFF6FFF08B2D00010081")
        cases = [
            ("undecodable_payload", f"em-rej-{uid}", cs_topic(known), chirpstack(known, b"\x01")),
            ("no_decoder", f"pk-bare-{uid}", cs_topic(bare), chirpstack(bare, b"\x01", port=1)),
            (
                "out_of_range",
                f"pk-hot-{uid}",
                cs_topic(eui_for(uid, 9)),
                chirpstack(eui_for(uid, 9), do202_hot, port=3),
            ),
        ]
        for _, _, topic, payload in cases:
            publisher.publish(topic, payload)
        publisher.publish(cs_topic(stranger), chirpstack(stranger, EM310_TILT))
        for reason, dev, topic, payload in cases:
            items = wait_for(partial(rejected, api, device_id=dev))
            assert [i["reason"] for i in items] == [reason], items
            assert items[0]["topic"] == topic
            stored = api.get(f"/rejected/{items[0]['id']}/payload")  # raw envelope kept
            assert stored.content == payload
            assert items[0]["detail"]

        def stranger_rejected() -> list[dict[str, Any]]:
            return [i for i in rejected(api, reason="unknown_device") if stranger in i["detail"]]

        item = wait_for(stranger_rejected)[0]
        assert item["topic"] == cs_topic(stranger)


class TestRegistration:
    def test_decoder_list_names_vendor_model_kind(self, api: TestClient) -> None:
        decoders = {d["name"]: d for d in api.get("/decoders").json()}
        assert decoders["milesight-em310-udl"]["kind"] == "waste_column"
        assert decoders["milesight-em310-udl"]["vendor"] == "Milesight"
        assert decoders["bosch-pls"]["kind"] == "parking_sensor"
        assert decoders["wmbusmeters"]["kind"] == "water_meter"

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"decoder": "no-such"}, "decoder"),
            ({"decoder": "bosch-pls"}, "decoder"),  # a parking decoder on a waste column
            ({"dev_eui": "12345"}, "dev_eui"),
            ({"wmbus_id": "not an id"}, "wmbus_id"),
        ],
    )
    def test_bad_bindings_are_422(
        self, api: TestClient, uid: str, extra: dict[str, str], field: str
    ) -> None:
        r = api.post("/devices", json={"id": f"wc-{uid}", "kind": "waste_column", **extra})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"][-1] == field

    def test_a_dev_eui_binds_one_device(self, api: TestClient, uid: str) -> None:
        eui = eui_for(uid, 10)
        register(api, id=f"a-{uid}", kind="parking_sensor", dev_eui=eui)
        r = api.post(
            "/devices", json={"id": f"b-{uid}", "kind": "parking_sensor", "dev_eui": eui.upper()}
        )
        assert r.status_code == 409
        assert "dev_eui" in r.json()["detail"]

    def test_bulk_csv_of_a_thousand_devices(self, api: TestClient, uid: str) -> None:
        lines = ["id,kind,label,lat,lon,group,dev_eui,decoder,depth_mm,waste_stream"]
        for i in range(1000):
            lines.append(
                f"bulk-{uid}-{i:04d},waste_column,Colonne {i},47.99,-4.10,round-{i % 7},"
                f"{i:06x}{uid},milesight-em310-udl,1800,glass"
            )
        r = api.post(
            "/devices/bulk", content="\n".join(lines).encode(), headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["errors"][:3] == []
        assert (report["rows"], report["created"]) == (1000, 1000)
        again = api.post(
            "/devices/bulk", content="\n".join(lines).encode(), headers={"Content-Type": "text/csv"}
        ).json()
        assert again["created"] == 0
        assert len(again["errors"]) == 1000
        assert again["errors"][0]["message"] == f"device 'bulk-{uid}-0000' is already registered"
        dev = api.get(f"/devices/bulk-{uid}-0042").json()
        assert dev["attributes"] == {"depth_mm": 1800, "waste_stream": "glass"}
        assert dev["location"] == {"lat": 47.99, "lon": -4.1}
        assert dev["decoder"] == "milesight-em310-udl"

    def test_bulk_reports_each_bad_row_precisely(self, api: TestClient, uid: str) -> None:
        csv = "\n".join(
            [
                "id,kind,dev_eui,decoder,depth_mm,zone",
                f"ok-{uid},waste_column,,,1800,",
                f"ok-{uid},waste_column,,,1800,",
                f"bad kind-{uid},waste_column,,,,",
                f"k-{uid},toaster,,,,",
                f"d-{uid},waste_column,,,-5,",
                f"z-{uid},waste_column,,,,central",
                f"e-{uid},parking_sensor,xyz,,,",
                f"m-{uid},parking_sensor,,milesight-em310-udl,,",
                f"p-{uid},parking_sensor,,,,gare",
            ]
        )
        report = api.post("/devices/bulk", content=csv, headers={"Content-Type": "text/csv"}).json()
        assert report["created_ids"] == [f"ok-{uid}", f"p-{uid}"]
        got = [(e["row"], e["field"]) for e in report["errors"]]
        assert got == [
            (2, "id"),
            (3, "id"),
            (4, "kind"),
            (5, "attributes.depth_mm"),
            (6, "attributes.zone"),
            (7, "dev_eui"),
            (8, "decoder"),
        ]
        assert "repeats row 1" in report["errors"][0]["message"]

    def test_bulk_dry_run_creates_nothing(self, api: TestClient, uid: str) -> None:
        body = [{"id": f"dry-{uid}", "kind": "water_meter"}]
        report = api.post("/devices/bulk", params={"dry_run": "true"}, json=body).json()
        assert (report["dry_run"], report["created"]) == (True, 1)
        assert api.get(f"/devices/dry-{uid}").status_code == 404

    @pytest.mark.parametrize(
        ("content", "ctype", "status"),
        [
            (b"{}", "application/json", 422),
            (b"[", "application/json", 422),
            (b"name,colour\nx,y", "text/csv", 422),
            (b"id,kind", "application/xml", 415),
        ],
    )
    def test_bulk_bad_files(self, api: TestClient, content: bytes, ctype: str, status: int) -> None:
        r = api.post("/devices/bulk", content=content, headers={"Content-Type": ctype})
        assert r.status_code == status
        assert isinstance(r.json()["detail"], str)
