"""The feedback store: its schema, the bulk insert paths, and the staging files beside a SQLite store."""
