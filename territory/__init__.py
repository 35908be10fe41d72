"""Process entry points, settings and the embedded development services."""
