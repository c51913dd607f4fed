-- Products, orders and idempotency keys of the shop. The limits repeat those of package shop, so
-- that no code path can store what the API refuses; stock can never go below zero.

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price_cents bigint NOT NULL CHECK (price_cents > 0 AND price_cents <= 10000000000),
    stock       bigint NOT NULL CHECK (stock >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_created ON products (created_at, id);

-- user_id is not a foreign key: the replica of users may be rebuilt and swapped at any time, and
-- an order outlives any change of its user.
CREATE TABLE orders (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    total_cents bigint NOT NULL CHECK (total_cents > 0),
    status      text NOT NULL DEFAULT 'placed',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id    uuid NOT NULL REFERENCES orders (id),
    position    int NOT NULL,
    product_id  uuid NOT NULL REFERENCES products (id),
    quantity    int NOT NULL CHECK (quantity >= 1),
    price_cents bigint NOT NULL CHECK (price_cents > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, product_id)
);
CREATE INDEX order_items_product ON order_items (product_id);

-- A row is inserted first thing in the order transaction, so a concurrent request with the same
-- key waits on the primary key until the first commits (then replays it) or rolls back (then
-- places the order itself). The response is filled in before the commit; only a placed order
-- (201) is ever stored.
CREATE TABLE idempotency_keys (
    user_id       uuid NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status_code   int,
    response_body bytea,
    order_id      uuid REFERENCES orders (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
