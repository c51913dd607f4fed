-- Posts. author_id is deliberately not a foreign key to replica_users: the replica belongs to the
-- replica package, which may rebuild it and swap tables while the service runs; reads LEFT JOIN it
-- for the author's name instead.
CREATE TABLE posts (
	id         uuid PRIMARY KEY,
	author_id  uuid NOT NULL,
	title      text NOT NULL,
	body       text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- Lists are newest first, with the id breaking ties, so keyset pages are stable.
CREATE INDEX posts_newest ON posts (created_at DESC, id DESC);
CREATE INDEX posts_author_newest ON posts (author_id, created_at DESC, id DESC);
