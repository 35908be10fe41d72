"""Domain answers computed from readings: water consumption and leaks, waste fill forecasts and
collection lists, parking occupancy and forecasts. Pure functions (no I/O), like `devices/`:
`storage/` feeds them rows, `worker/` and `api/` call them."""
