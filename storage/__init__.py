"""Everything that speaks SQL: the connection pool, the migration runner and named queries.

Shared by the ingest service and the API; neither writes SQL of its own.
"""
