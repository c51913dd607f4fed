// Package postgres stores the blog's posts in Postgres. It is the only package of the blog that
// knows SQL. Reads join the user replica (table replica_users, owned by package replica in the
// same database) for the author's display name.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/authmesh/blog/internal/blog"
	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/pg"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or updates the blog's own tables.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.Apply(ctx, pool, "blog", migrations, "migrations")
}

// Store reads and writes posts. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	pageBytes int64 // PageBytes, but for tests
}

// New returns a store on pool; the caller closes the pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool, pageBytes: PageBytes} }

// postColumns are the columns of a post, from posts p joined with replica_users u.
const postColumns = `p.id, p.author_id, COALESCE(u.display_name, '') AS author_name, p.title, p.body,
	p.created_at, p.updated_at`

type postRow struct {
	ID         uuid.UUID `db:"id"`
	AuthorID   uuid.UUID `db:"author_id"`
	AuthorName string    `db:"author_name"`
	Title      string    `db:"title"`
	Body       string    `db:"body"`
	CreatedAt  time.Time `db:"created_at"`
	UpdatedAt  time.Time `db:"updated_at"`
}

func (r postRow) post() blog.Post {
	return blog.Post{
		ID:         r.ID,
		AuthorID:   r.AuthorID,
		AuthorName: r.AuthorName,
		Title:      r.Title,
		Body:       r.Body,
		CreatedAt:  r.CreatedAt.UTC(),
		UpdatedAt:  r.UpdatedAt.UTC(),
	}
}

// collectPost returns the single post of rows, or blog.ErrNotFound.
func collectPost(rows pgx.Rows) (blog.Post, error) {
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[postRow])
	if err != nil {
		return blog.Post{}, translate(err)
	}
	return row.post(), nil
}

// Create stores a new post by author; the draft must be valid.
func (s *Store) Create(ctx context.Context, author uuid.UUID, d blog.Draft) (blog.Post, error) {
	const q = `WITH p AS (
		INSERT INTO posts (id, author_id, title, body) VALUES ($1, $2, $3, $4)
		RETURNING *)
	SELECT ` + postColumns + ` FROM p LEFT JOIN replica_users u ON u.id = p.author_id`
	id, err := uuid.NewV7()
	if err != nil {
		return blog.Post{}, fmt.Errorf("new post id: %w", err)
	}
	rows, _ := s.pool.Query(ctx, q, id, author, d.Title, d.Body)
	p, err := collectPost(rows)
	if err != nil {
		return blog.Post{}, fmt.Errorf("insert post: %w", err)
	}
	return p, nil
}

// Post returns the post with the given id, or blog.ErrNotFound.
func (s *Store) Post(ctx context.Context, id uuid.UUID) (blog.Post, error) {
	const q = `SELECT ` + postColumns + `
	FROM posts p LEFT JOIN replica_users u ON u.id = p.author_id
	WHERE p.id = $1`
	rows, _ := s.pool.Query(ctx, q, id)
	p, err := collectPost(rows)
	if err != nil {
		return blog.Post{}, fmt.Errorf("get post %s: %w", id, err)
	}
	return p, nil
}

// Update applies a valid patch to the post with the given id and returns the result, or
// blog.ErrNotFound. Only the fields the patch sets are written, so concurrent patches of
// different fields both take effect.
func (s *Store) Update(ctx context.Context, id uuid.UUID, patch blog.Patch) (blog.Post, error) {
	const q = `WITH p AS (
		UPDATE posts SET title = COALESCE($2, title), body = COALESCE($3, body), updated_at = now()
		WHERE id = $1
		RETURNING *)
	SELECT ` + postColumns + ` FROM p LEFT JOIN replica_users u ON u.id = p.author_id`
	rows, _ := s.pool.Query(ctx, q, id, patch.Title, patch.Body)
	p, err := collectPost(rows)
	if err != nil {
		return blog.Post{}, fmt.Errorf("update post %s: %w", id, err)
	}
	return p, nil
}

// Delete removes the post with the given id, or returns blog.ErrNotFound.
func (s *Store) Delete(ctx context.Context, id uuid.UUID) error {
	const q = `DELETE FROM posts WHERE id = $1`
	tag, err := s.pool.Exec(ctx, q, id)
	if err != nil {
		return fmt.Errorf("delete post %s: %w", id, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete post %s: %w", id, blog.ErrNotFound)
	}
	return nil
}

// PageBytes bounds the text (titles and bodies, in bytes as stored) that one page of List reads
// from the database: a page ends early, with a next page, before the post that would take it
// past PageBytes, but always holds at least one post. The largest post is about 400 KB (100,000
// four-byte characters), so a page holds at most about 1 MiB of text instead of 40 MB, and 100
// ordinary posts (up to 10 KB each) still fit in one page.
const PageBytes = 1 << 20

// listRow is a post of a page of List.
type listRow struct {
	postRow
	// Candidates is how many posts follow the page's cursor, counting up to the limit plus one:
	// more than the page holds when another page follows.
	Candidates int64 `db:"candidates"`
}

// List returns one page of posts, newest first (created_at, then id, descending): at most
// query.Limit posts, fewer (with Next set) when more would take the page past PageBytes.
func (s *Store) List(ctx context.Context, query blog.Query) (blog.Page, error) {
	// The page's keys are chosen first, with the running size of the posts up to each, so that
	// the bodies are read only for the posts of the page. The size is octet_length, which Postgres
	// reads from the value's header without decompressing it. One post more than the limit tells
	// whether another page follows.
	//
	// The conditions are added only when used, so that each shape of the query gets a plan that
	// uses its index (a generic plan of "$1 IS NULL OR author_id = $1" could not).
	const (
		head = `WITH keys AS (
		SELECT p.id, row_number() OVER w AS n,
			sum(octet_length(p.title) + octet_length(p.body)) OVER w AS upto
		FROM posts p
		WHERE true`
		tail = `
		WINDOW w AS (ORDER BY p.created_at DESC, p.id DESC ROWS UNBOUNDED PRECEDING)
		ORDER BY p.created_at DESC, p.id DESC
		LIMIT %s)
	SELECT ` + postColumns + `, (SELECT count(*) FROM keys) AS candidates
	FROM keys k JOIN posts p ON p.id = k.id LEFT JOIN replica_users u ON u.id = p.author_id
	WHERE k.n <= %s AND (k.n = 1 OR k.upto <= %s)
	ORDER BY k.n`
	)
	if query.Limit < 1 {
		return blog.Page{}, fmt.Errorf("list posts: limit %d below 1", query.Limit)
	}
	sql, args := head, []any{}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if query.AuthorID != uuid.Nil {
		sql += ` AND p.author_id = ` + arg(query.AuthorID)
	}
	if k := query.After; k != nil {
		sql += ` AND (p.created_at, p.id) < (` + arg(k.CreatedAt) + `, ` + arg(k.ID) + `)`
	}
	sql += fmt.Sprintf(tail, arg(query.Limit+1), arg(query.Limit), arg(s.pageBytes))

	// The rows are read whole before the connection goes back to the pool, so that a slow client
	// holds memory (at most a page) but never a connection.
	rows, _ := s.pool.Query(ctx, sql, args...)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[listRow])
	if err != nil {
		return blog.Page{}, fmt.Errorf("list posts: %w", translate(err))
	}
	page := blog.Page{Posts: make([]blog.Post, len(list))}
	for i, r := range list {
		page.Posts[i] = r.post()
	}
	if len(list) > 0 && int64(len(list)) < list[0].Candidates {
		next := page.Posts[len(list)-1].Cursor()
		page.Next = &next
	}
	return page, nil
}

// translate turns the errors of pgx that mean something to the caller into the blog's sentinels.
func translate(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return blog.ErrNotFound
	}
	if pg.Unavailable(err) {
		return fmt.Errorf("%w: %w", blog.ErrUnavailable, err)
	}
	return err
}
