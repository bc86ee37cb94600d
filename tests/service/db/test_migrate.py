"""Migrations are applied in order, recorded, and applied once."""

from __future__ import annotations

import psycopg

from service.db.migrate import MIGRATIONS, migrate


def test_every_migration_is_recorded_once(database_url):
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == sorted(p.stem for p in MIGRATIONS.glob("*.sql"))


def test_tenant_tables_are_keyed_by_tenant_and_id(database_url):
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT tc.table_name, array_agg(kcu.column_name::text ORDER BY kcu.ordinal_position)
            FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu USING (constraint_name, table_name)
            WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'
              AND tc.table_name NOT IN ('tenants', 'schema_migrations')
            GROUP BY tc.table_name
            """
        ).fetchall()
    keys = dict(rows)
    # Idempotency keys are unique per (tenant, client, key), as SPEC says.
    assert keys.pop("idempotency_keys") == ["tenant_id", "client_id", "key"]
    # The key ring is service-wide, like schema_migrations.
    assert keys.pop("keys") == ["id"]
    assert {"accounts", "api_clients", "transfers", "entries", "events"} <= set(keys)
    for table, columns in keys.items():
        assert columns == ["tenant_id", "id"], table


def test_balance_floor_is_enforced_by_the_database(database_url):
    with psycopg.connect(database_url) as conn:
        tenant = conn.execute(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'floor') RETURNING id"
        ).fetchone()[0]
        try:
            conn.execute(
                "INSERT INTO accounts (tenant_id, id, name, currency, overdraft_limit, posted)"
                " VALUES (%s, gen_random_uuid(), 'x', 'USD', 10, -11)",
                (tenant,),
            )
        except psycopg.errors.CheckViolation as exc:
            assert "accounts_balance_floor" in str(exc)
        else:
            raise AssertionError("the floor check did not fire")
