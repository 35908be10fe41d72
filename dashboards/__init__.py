"""Grafana dashboards as code: one module per dashboard, built with grafana-foundation-sdk's
typed builders, provisioned with grafana-client (`territory grafana provision|export`)."""
