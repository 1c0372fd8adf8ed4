"""State: cases, instances, jobs and the pseudonym vault, over SQLite (default) or PostgreSQL."""
