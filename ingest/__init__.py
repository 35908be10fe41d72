"""Moving messages from the broker to the database without losing or duplicating any."""
