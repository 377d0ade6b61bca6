package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

const (
	// adminPermission is the tool's Config.AdminPermission; the user holds
	// it only with -admin. A service that shares the Redis and wants its
	// admins to be the tool's admins uses the same name.
	adminPermission = "exporter:admin"
	defaultPrefix   = exporter.DefaultPrefix
)

// conn is the Redis client and the Exporter on it, as the -user.
type conn struct {
	client redis.UniversalClient
	exp    *exporter.Exporter
	user   exporter.User
	addr   string // for messages: host:port, never the URL and its password
	down   bool   // shutdown ran
}

// connect opens the Redis of -redis, checks that it answers within
// -timeout and makes an Exporter on it with cfg (AdminPermission and the
// logger set here). run shuts it down and closes the client after the
// command.
func (a *app) connect(ctx context.Context, cfg exporter.Config) (*conn, error) {
	if a.user == "" {
		return nil, usageErrorf("", "no user: pass -user ID or set EXPORTCTL_USER")
	}
	client, addr, err := newRedisClient(a.redis, a.cluster)
	if err != nil {
		return nil, err
	}
	cfg.AdminPermission = adminPermission
	if a.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	exp, err := exporter.New(exporter.NewRedisStore(client).WithPrefix(a.prefix), cfg)
	if err != nil {
		return nil, errors.Join(err, client.Close())
	}
	pctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		return nil, errors.Join(fmt.Errorf("cannot reach Redis at %s: %w", addr, err), client.Close())
	}
	perms := []string{exporter.DefaultPermission}
	if a.admin {
		perms = append(perms, adminPermission)
	}
	a.conn = &conn{client: client, exp: exp, addr: addr,
		user: exporter.User{ID: a.user, Permissions: perms}}
	return a.conn, nil
}

// shutdown shuts the Exporter down: it waits until ctx is done for the
// exports that run here, then fails them.
func (c *conn) shutdown(ctx context.Context) error {
	c.down = true
	return c.exp.Shutdown(ctx)
}

// close shuts the Exporter down, unless shutdown ran, and closes the
// client.
func (c *conn) close(timeout time.Duration) error {
	if !c.down {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := c.shutdown(ctx); err != nil {
			c.client.Close()
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	return c.client.Close()
}

// newRedisClient makes the client of -redis: a *redis.Client for one URL,
// a *redis.ClusterClient for several comma-separated addresses or with
// -cluster. A part without a scheme is taken as redis://part; the user,
// password and TLS of a cluster come from the first part. Every client has
// ContextTimeoutEnabled, so -timeout bounds each call.
func newRedisClient(raw string, cluster bool) (redis.UniversalClient, string, error) {
	var parts []string
	for p := range strings.SplitSeq(raw, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !strings.Contains(p, "://") {
			p = "redis://" + p
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return nil, "", usageErrorf("", "-redis is empty")
	}
	if !cluster && len(parts) == 1 {
		opt, err := redis.ParseURL(parts[0])
		if err != nil {
			return nil, "", usageErrorf("", "-redis: %v", urlError(err))
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewClient(opt), opt.Addr, nil
	}
	u, err := url.Parse(parts[0])
	if err != nil {
		return nil, "", usageErrorf("", "-redis: %v", urlError(err))
	}
	q := u.Query()
	for _, p := range parts[1:] {
		pu, err := url.Parse(p)
		if err != nil {
			return nil, "", usageErrorf("", "-redis: %v", urlError(err))
		}
		q.Add("addr", pu.Host)
	}
	u.RawQuery = q.Encode()
	opt, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, "", usageErrorf("", "-redis: %v", urlError(err))
	}
	opt.ContextTimeoutEnabled = true
	return redis.NewClusterClient(opt), strings.Join(opt.Addrs, ","), nil
}

// redactURLs masks the passwords of a comma-separated list of URLs.
func redactURLs(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// urlError drops the URL from a parse error: it may hold a password.
func urlError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
