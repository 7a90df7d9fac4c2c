"""What this project's migrations build, read back from a database's catalogs as plain
text: two databases that describe the same are the same schema, whichever Postgres
version built them and whatever text (migrations, supabase/schema.sql) they came from.
"""

from __future__ import annotations

import psycopg

from tools.schema import PLATFORM_TABLES as NOT_OURS

_QUERIES = {
    "relations": """
        SELECT c.oid::regclass::text, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(c.reloptions, '{}'), obj_description(c.oid, 'pg_class'),
               (SELECT array_agg(a ORDER BY a::text) FROM aclexplode(c.relacl) AS a)::text
        FROM pg_class AS c
        WHERE c.relnamespace IN ('public'::regnamespace, 'private'::regnamespace)
          AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
          AND c.oid::regclass::text <> ALL (%(not_ours)s)
    """,
    "columns": """
        SELECT a.attrelid::regclass::text, a.attnum, a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
               a.attgenerated, pg_get_expr(d.adbin, d.adrelid), a.attstattarget,
               col_description(a.attrelid, a.attnum), a.attacl::text
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef AS d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
        WHERE c.relnamespace IN ('public'::regnamespace, 'private'::regnamespace)
          AND c.relkind IN ('r', 'v', 'm', 'p') AND a.attnum > 0 AND NOT a.attisdropped
          AND c.oid::regclass::text <> ALL (%(not_ours)s)
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace IN ('public'::regnamespace, 'private'::regnamespace)
          AND conrelid::regclass::text <> ALL (%(not_ours)s)
    """,
    "indexes": """
        SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
        FROM pg_index
        WHERE indrelid::regclass::text <> ALL (%(not_ours)s)
          AND (SELECT relnamespace FROM pg_class WHERE oid = indrelid)
              IN ('public'::regnamespace, 'private'::regnamespace)
    """,
    "policies": """
        SELECT polrelid::regclass::text, polname, polcmd, polpermissive,
               polroles::regrole[]::text, pg_get_expr(polqual, polrelid),
               pg_get_expr(polwithcheck, polrelid)
        FROM pg_policy
        WHERE polrelid::regclass::text <> ALL (%(not_ours)s)
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid::regclass::text <> ALL (%(not_ours)s)
          AND (SELECT relnamespace FROM pg_class WHERE oid = tgrelid)
              IN ('public'::regnamespace, 'private'::regnamespace)
    """,
    "views": """
        SELECT c.oid::regclass::text, pg_get_viewdef(c.oid)
        FROM pg_class AS c
        WHERE c.relnamespace IN ('public'::regnamespace, 'private'::regnamespace)
          AND c.relkind IN ('v', 'm')
    """,
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),
               obj_description(p.oid, 'pg_proc'),
               (SELECT array_agg(a ORDER BY a::text) FROM aclexplode(p.proacl) AS a)::text
        FROM pg_proc AS p
        WHERE p.pronamespace IN ('public'::regnamespace, 'private'::regnamespace)
    """,
    "schemas": """
        SELECT nspname, (SELECT array_agg(a ORDER BY a::text) FROM aclexplode(nspacl) AS a)::text
        FROM pg_namespace WHERE nspname = 'private'
    """,
    "lookup rows": """
        SELECT 'private.twilio_statuses', to_jsonb(t)::text FROM private.twilio_statuses AS t
        UNION ALL
        SELECT 'private.sms_provider_statuses', to_jsonb(p)::text
        FROM private.sms_provider_statuses AS p
    """,
}


def describe(conninfo: str) -> dict[str, list[tuple[object, ...]]]:
    """Every object of the public and private schemas this project owns, sorted."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Names come schema-qualified, whatever the connection's path.
        conn.execute("SET search_path = ''")
        arguments = {"not_ours": list(NOT_OURS)}
        return {
            kind: sorted(tuple(str(value) for value in row) for row in conn.execute(sql, arguments))
            for kind, sql in _QUERIES.items()
        }
