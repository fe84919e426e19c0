"""Storage: the database, its models and migrations, and what instances share."""
