"""Fake fleets standing in for the territory's hardware, for demos, load and fault tests.

`behaviour` and `faults` are pure (seeded, no I/O) so tests can assert on what devices send;
`truth` replays the devices' worlds to say what really happened (leaks, emptying times, parking
states), and `daytypes` knows French public holidays;
`encoders` (real devices' binary payloads) and `lorawan` (ChirpStack / The Things Stack uplink
envelopes) are pure too; `fleet` does the I/O (HTTP registration, MQTT publishing); `cli` wires
options to it. Only `devices` is imported from the platform, so the simulator exercises the
public contract (HTTP API, MQTT topics, native payloads and network-server envelopes) and
nothing internal.
"""
