-- Users. The email is kept as given and unique case-insensitively.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'disabled')),
    version       bigint NOT NULL CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- Keyset pagination of the user list.
CREATE INDEX users_created_at_id ON users (created_at, id);
