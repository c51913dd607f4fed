-- Events written in the transaction of the change they record, published by the relay. Published
-- rows are kept: they are the second copy of the history, from which Republish restores a stream.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid UNIQUE NOT NULL,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL,
    stream_seq   bigint NULL
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
