-- A login is counted before its password is checked: a row is inserted pending when the attempt is
-- let through, then marked as a failure (pending false) or deleted again (the login succeeded).
-- For a pending row, failed_at is when the attempt began. id names the row; rows from before
-- this migration are failures.
ALTER TABLE login_failures
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN pending boolean NOT NULL DEFAULT false;
