"""The SQLite accounts backend: `database.Database`, the file under the repositories of
auth/sql/ (one node's default)."""
