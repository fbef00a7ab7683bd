"""Tasks: the durable job queue in PostgreSQL, its workers, dead letters and schedules."""
