-- The service's copy of the users it authorizes, one row per user, at the highest version applied.
CREATE TABLE replica_users (
    id           uuid PRIMARY KEY,
    email        text NOT NULL,
    display_name text NOT NULL,
    roles        text[] NOT NULL,
    status       text NOT NULL,
    version      bigint NOT NULL,
    stream_seq   bigint NOT NULL, -- sequence of the event that set the row
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One row: the highest stream sequence committed by the consumer.
CREATE TABLE replica_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO replica_state DEFAULT VALUES;

-- Events that could not be applied. user_id comes from the subject, so it is known even when the
-- payload is garbage; while a row names a user, that user's replica state is stale.
CREATE TABLE replica_dead_letters (
    stream_seq bigint PRIMARY KEY,
    subject    text NOT NULL,
    user_id    uuid NULL,
    data       bytea NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replica_dead_letters_user ON replica_dead_letters (user_id);
