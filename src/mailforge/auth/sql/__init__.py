"""The accounts repositories, in the SQL that SQLite and PostgreSQL share: `directory`,
`credentials`, `sendlimits` and `mailboxsettings`, each built on a `database.Database` that a
backend (auth/sqlite/, auth/postgresql/) opens; `schema` holds the tables and migrations of
both. Together they implement every protocol of auth.api."""
