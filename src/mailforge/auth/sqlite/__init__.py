"""The SQLite accounts backend: `database.Database` (the file, one connection and one lock per
process) and the repositories built on it, one per job: `directory`, `credentials`,
`sendlimits`, `mailboxsettings`. Together they implement every protocol of auth.api."""
