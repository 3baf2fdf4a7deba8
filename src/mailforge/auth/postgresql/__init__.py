"""The PostgreSQL accounts backend, for many nodes sharing one accounts database:
`database.Database` (a psycopg connection pool) under the repositories of auth/sql/, and
`conninfo` (the DSN with its password, which no message shows)."""
