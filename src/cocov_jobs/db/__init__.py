"""Database access: models of Cocov's schema, engine/session factory, migrations."""
