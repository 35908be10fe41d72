"""Corpus samples that carry only a network-server-decoded object (no bytes): no decoder of
ours is bound, so the ingest maps the decoded fields (devices/lns_objects.py)."""

from __future__ import annotations

from tests.vectors.expect import Expect

EXPECTATIONS: list[Expect] = [
    Expect(
        file="parking/tts_storage_api_parking_decoded.json",
        decoder="",
        readings=lambda d: [{"occupied": d["occupied"]}],
        divergence="The Storage Integration field mask leaves out the DevEUI: the TTS device id "
        "names the device instead. The decoded `type` is frame bookkeeping, not a measurement.",
    ),
]
