-- Failed logins, for throttling. Shared by every instance; old rows are pruned.
-- key is a SHA-256 of the lower-cased email or of the client address, never the value itself.
CREATE TABLE login_failures (
    scope     text NOT NULL,
    key       text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX login_failures_scope_key ON login_failures (scope, key, failed_at DESC);
CREATE INDEX login_failures_failed_at ON login_failures (failed_at);
