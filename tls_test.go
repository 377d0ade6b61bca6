package exporter

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// tlsFiles are the PEM files of a test PKI: a CA and a server certificate
// for 127.0.0.1 that it signed.
type tlsFiles struct {
	ca, cert, key string
	pool          *x509.CertPool // holds the CA
}

// tlsGenerate writes a fresh CA and server certificate to dir.
func tlsGenerate(t *testing.T, dir string) tlsFiles {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "exporter test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	f := tlsFiles{
		ca:   filepath.Join(dir, "ca.pem"),
		cert: filepath.Join(dir, "server.pem"),
		key:  filepath.Join(dir, "server.key"),
		pool: x509.NewCertPool(),
	}
	f.pool.AddCert(caCert)
	write := func(path, typ string, der []byte) {
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	write(f.ca, "CERTIFICATE", caDER)
	write(f.cert, "CERTIFICATE", der)
	write(f.key, "PRIVATE KEY", keyDER)
	return f
}

// tlsServer starts a private redis-server that also listens with TLS, and
// returns the TLS address. The plain port stays: the harness waits for
// PING on it. A build of redis-server without TLS skips the test, or fails
// it when EXPORTER_REQUIRE_REDIS=1.
func tlsServer(t *testing.T, files tlsFiles) string {
	t.Helper()
	var err error
	for range 3 { // a fresh TLS port if the one picked was taken meanwhile
		var port int
		port, err = tlsFreePort()
		require.NoError(t, err)
		var srv *redistest.Server
		srv, err = redistest.Start(redistest.Options{Args: []string{
			"--tls-port", strconv.Itoa(port),
			"--tls-cert-file", files.cert,
			"--tls-key-file", files.key,
			"--tls-ca-cert-file", files.ca,
			"--tls-auth-clients", "no",
		}})
		if err == nil {
			t.Cleanup(func() {
				if err := srv.Stop(); err != nil {
					t.Errorf("stop %s: %v", srv.Addr, err)
				}
			})
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	switch {
	case errors.Is(err, redistest.ErrNotInstalled) && !redistest.Required():
		t.Skip(err)
	case tlsUnsupported(err) && !redistest.Required():
		t.Skipf("this redis-server is built without TLS: %v", err)
	case tlsUnsupported(err):
		t.Fatalf("this redis-server is built without TLS, and EXPORTER_REQUIRE_REDIS=1: %v", err)
	}
	t.Fatal(err)
	return ""
}

// tlsUnsupported reports whether a failed start says that redis-server has
// no TLS: before 7.2 a build without it does not know the tls-* options;
// from 7.2 TLS may be a module that is not loaded.
func tlsUnsupported(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Bad directive") && strings.Contains(s, "tls") ||
		strings.Contains(s, "connection type tls") ||
		strings.Contains(s, "TLS not supported") || strings.Contains(s, "not built with TLS")
}

// tlsFreePort returns a port on 127.0.0.1 that was free a moment ago.
func tlsFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tlsClient connects to addr with TLS under cfg.
func tlsClient(t *testing.T, addr string, cfg *tls.Config) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: cfg, ContextTimeoutEnabled: true,
		DialTimeout: 2 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTLS runs the library against redis-server over TLS, with a CA and a
// server certificate made by the test: a full round trip works on the TLS
// port, and a client that does not trust the CA, or expects another name,
// fails with a certificate error instead of talking to the server.
func TestTLS(t *testing.T) {
	files := tlsGenerate(t, t.TempDir())
	addr := tlsServer(t, files)
	ctx := testCtx(t)
	good := &tls.Config{RootCAs: files.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	e := &env{}
	cfg := Config{ChunkSize: testChunk}
	a := e.exporterOn(t, NewRedisStore(tlsClient(t, addr, good)).WithPrefix("tls:"), cfg)
	b := e.exporterOn(t, NewRedisStore(tlsClient(t, addr, good.Clone())).WithPrefix("tls:"), cfg)

	// The port speaks TLS only, with the test's certificate.
	conn, err := tls.Dial("tcp", addr, good)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", conn.ConnectionState().PeerCertificates[0].Subject.CommonName)
	require.NoError(t, conn.Close())

	data := randomBytes(4*testChunk + 3)
	job, err := a.StartExport(ctx, alice, bytes.NewReader(data), WithTotal(int64(len(data))))
	require.NoError(t, err)
	_, err = b.GetExportStatus(ctx, alice, job.ID)
	require.NoError(t, err)
	done := waitFor(t, b, alice, job.ID, StatusCompleted)
	require.Equal(t, int64(len(data)), done.Bytes)
	d, err := b.OpenExport(ctx, alice, job.ID)
	require.NoError(t, err)
	got, err := io.ReadAll(d)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	require.Equal(t, data, got)

	// A cancel from the other instance reaches the running one over TLS
	// pub/sub.
	src := newFeedSource(randomBytes(2 * testChunk))
	t.Cleanup(func() { src.Close() })
	running, err := a.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, b, alice, running.ID, StatusRunning)
	cancelled, err := b.CancelExport(ctx, alice, running.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, cancelled.Status)
	src.requireClosedOnce(t)
	waitFor(t, a, alice, running.ID, StatusCancelled)

	bad := []struct {
		name  string
		cfg   *tls.Config
		check func(t *testing.T, err error)
	}{
		{"unknown CA", &tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, func(t *testing.T, err error) {
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown)
		}},
		{"wrong name", &tls.Config{RootCAs: files.pool, ServerName: "redis.example", MinVersion: tls.VersionTLS12}, func(t *testing.T, err error) {
			var name x509.HostnameError
			require.ErrorAs(t, err, &name)
		}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
			defer cancel()
			c := tlsClient(t, addr, tt.cfg)
			err := c.Ping(ctx).Err()
			require.Error(t, err)
			var verify *tls.CertificateVerificationError
			require.ErrorAs(t, err, &verify)
			tt.check(t, err)
			x := e.exporterOn(t, NewRedisStore(c).WithPrefix("tls:"), cfg)
			job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
			require.Nil(t, job)
			require.ErrorAs(t, err, &verify, "StartExport fails with the certificate error")
			_, err = x.GetExportStatus(ctx, alice, done.ID)
			require.ErrorAs(t, err, &verify)
		})
	}

	// A client without TLS on the TLS port fails, and does not hang.
	t.Run("plain client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
		defer cancel()
		c := tlsClient(t, addr, nil)
		require.Error(t, c.Ping(ctx).Err())
		require.NoError(t, ctx.Err(), "the plain client waited for its deadline")
	})
}
