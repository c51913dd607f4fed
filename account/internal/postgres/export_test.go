package postgres

// Migrations are account's embedded migrations, for tests that build an older schema.
var Migrations = migrations
