"""Database access: the pool, migrations, and one module of SQL per table group."""
