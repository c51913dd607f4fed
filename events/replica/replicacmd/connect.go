package replicacmd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/pg"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds on reaching the servers: a command fails with one line rather than hang.
const (
	connectTimeout = 3 * time.Second
	pingTimeout    = 5 * time.Second
)

// conns are the connections a command uses; close releases them.
type conns struct {
	pool *pgxpool.Pool
	nc   *nats.Conn
	js   jetstream.JetStream
}

func (cn *conns) close() {
	if cn.nc != nil {
		cn.nc.Close()
	}
	if cn.pool != nil {
		cn.pool.Close()
	}
}

// connect loads the configuration and opens the database and, when withNATS, NATS, each bounded
// by a short timeout.
func (c *cli) connect(ctx context.Context, withNATS bool) (*conns, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, err
	}
	cn := &conns{}
	// A small pool, without the services' session limits: a rebuild's statements may be long.
	cn.pool, err = pg.Open(ctx, cfg.DatabaseURL, pg.Config{Unbounded: true, MaxConns: 4, ConnectTimeout: connectTimeout, PingTimeout: pingTimeout})
	if err != nil {
		return nil, err
	}
	if !withNATS {
		return cn, nil
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cn.nc, err = bus.Connect(ctx, cfg.Conn(c.name+"-replica-cli"), connectTimeout, log)
	if err != nil {
		cn.close()
		return nil, err
	}
	cn.js, err = jetstream.New(cn.nc)
	if err != nil {
		cn.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return cn, nil
}
