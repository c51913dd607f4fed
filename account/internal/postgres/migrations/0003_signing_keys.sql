-- Ed25519 keys that sign access tokens. The current key is the newest one not retired. A retired
-- key's public key stays published until every token it signed has expired.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    private_key bytea NOT NULL CHECK (length(private_key) = 32), -- the Ed25519 seed
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at  timestamptz
);

CREATE INDEX signing_keys_created_at ON signing_keys (created_at DESC);
