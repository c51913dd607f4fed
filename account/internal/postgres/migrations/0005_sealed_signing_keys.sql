-- Signing keys are stored only sealed (authenticated encryption with a key derived from the first
-- of SIGNING_KEY_SECRETS, bound to the kid), and a new key is pending until a JWKS holding it has
-- been published.
--
-- private_key held the plaintext Ed25519 seed. The service seals the seeds of an older database at
-- start, right after this migration, and clears them (SQL has no secret to seal with); no new or
-- changed row may hold one (the NOT VALID check applies to every insert and update, not to the
-- rows already there).
ALTER TABLE signing_keys
    ALTER COLUMN private_key DROP NOT NULL,
    ADD COLUMN sealed_key bytea,
    ADD COLUMN activated_at timestamptz,
    ADD COLUMN revoked_at timestamptz;

-- Every key of an older database was current from its creation.
UPDATE signing_keys SET activated_at = created_at;

ALTER TABLE signing_keys
    ADD CONSTRAINT signing_keys_no_plaintext CHECK (private_key IS NULL) NOT VALID,
    ADD CONSTRAINT signing_keys_has_key CHECK (sealed_key IS NOT NULL OR private_key IS NOT NULL),
    ADD CONSTRAINT signing_keys_retired_after_activated CHECK (retired_at IS NULL OR activated_at IS NOT NULL);

COMMENT ON COLUMN signing_keys.private_key IS 'empty: the plaintext seed of older versions, sealed into sealed_key at start';
COMMENT ON COLUMN signing_keys.sealed_key IS 'the Ed25519 seed sealed with SIGNING_KEY_SECRETS (AES-256-GCM, kid as additional data)';
COMMENT ON COLUMN signing_keys.activated_at IS 'when the key began to sign; NULL while pending (published, not signing)';
COMMENT ON COLUMN signing_keys.revoked_at IS 'when the key was revoked: never published or used again';
