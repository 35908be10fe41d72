"""`territory worker`: keeps derived data (consumption, fill forecasts, zone occupancy) current
from the readings the ingest stored, off the ingest's hot path."""
