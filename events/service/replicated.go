package service

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/web"
)

// DefaultIssuer is TOKEN_ISSUER when unset.
const DefaultIssuer = "account"

// Replicated is a service that authorizes from its own user replica (blog, shop): Base, plus the
// replica fed by the USERS stream, the public keys watched in the key-value bucket, and the
// authenticator built on both.
type Replicated struct {
	*Base
	Replica *replica.Replica
	Keys    *auth.KeySet
	Auth    *auth.Authenticator
}

// OpenReplicated opens Base, migrates the replica's tables, and builds the replica and the
// authenticator for audience cfg.Name and the issuer TOKEN_ISSUER read through getenv
// (DefaultIssuer when unset). It declares nothing on NATS: the replica's consumer and the key watch
// wait in Serve for the stream and the bucket that account creates.
func OpenReplicated(ctx context.Context, cfg Config, getenv func(string) string, base *Base) (*Replicated, error) {
	issuer := strings.TrimSpace(getenv("TOKEN_ISSUER"))
	if issuer == "" {
		issuer = DefaultIssuer
	}
	if err := replica.Migrate(ctx, base.Pool); err != nil {
		return nil, fmt.Errorf("migrate replica: %w", err)
	}
	rep, err := replica.New(replica.Config{
		Pool:    base.Pool,
		JS:      base.JS,
		Durable: cfg.Name,
		Log:     base.Log,
		Metrics: base.Metrics,
	})
	if err != nil {
		return nil, err
	}
	keys, err := auth.NewKeySet(nil)
	if err != nil {
		return nil, err
	}
	v := &auth.Verifier{Keys: keys, Issuer: issuer, Audience: cfg.Name}
	return &Replicated{
		Base:    base,
		Replica: rep,
		Keys:    keys,
		Auth:    auth.New(v, rep, base.Log),
	}, nil
}

// Serve serves mux as Base.Serve does, with the replica's consumer, the key watch and the
// service's own workers running beside it; /readyz also requires the stream (the durable
// consumer declared) and at least one public key.
func (r *Replicated) Serve(ctx context.Context, mux *http.ServeMux, workers ...Worker) error {
	checks := map[string]web.Check{"stream": r.Replica.Ready, "keys": r.Keys.Ready}
	watch := auth.NewKeyWatch(r.Keys, r.JS, r.Log)
	return r.Base.Serve(ctx, mux, checks, append([]Worker{r.Replica.Run, watch.Run}, workers...)...)
}
