"""Database layer: engine, sessions, the declarative base, the embedded server, migrations."""
