package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imbus/eventbus/examples/wkim/wkclient"
	"github.com/imbus/eventbus/examples/wkim/wkproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun starts the command on a free port with a group from the flags,
// has two clients talk in it, and stops it by cancelling its context.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr strings.Builder
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-group", "g1=alice, bob", "-token", "s3cret"}, outW, &stderr)
		outW.CloseWithError(err)
		done <- err
	}()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		t.Fatalf("no output: %v", <-done)
	}
	url, ok := strings.CutPrefix(lines.Text(), "wkim listening on ")
	if !ok {
		t.Fatalf("first line %q", lines.Text())
	}
	if !lines.Scan() || lines.Text() != "group g1: alice,bob" {
		t.Fatalf("second line %q", lines.Text())
	}

	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if _, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "alice", Token: "wrong"}); err == nil {
		t.Fatal("login with the wrong -token succeeded")
	}
	alice, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "alice", Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := wkclient.Dial(dctx, url, wkclient.Options{UID: "bob", Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := alice.Send(dctx, "g1", wkproto.ChannelGroup, []byte(`{"content":"hi","type":1}`)); err != nil {
		t.Fatal(err)
	}
	p, err := bob.Next(dctx)
	if r, ok := p.(*wkproto.RecvPacket); err != nil || !ok || string(r.Payload) != `{"content":"hi","type":1}` {
		t.Fatalf("bob got %+v, %v", p, err)
	}

	cancel()
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rest) != 1 || !strings.HasPrefix(rest[0], "wkim stopped: sent=1 delivered=1 ") {
		t.Fatalf("last lines %q", rest)
	}
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "INSECURE") {
		t.Fatalf("-token ran without a warning:\n%s", stderr.String())
	}
}

// startRun runs the command with args until the test ends and returns the
// address it prints.
func startRun(t *testing.T, args ...string) (url string, stderr *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	outR, outW := io.Pipe()
	stderr = &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), outW, stderr)
		outW.CloseWithError(err)
		done <- err
	}()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		t.Fatalf("no output: %v\n%s", <-done, stderr)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	url, ok := strings.CutPrefix(lines.Text(), "wkim listening on ")
	if !ok {
		t.Fatalf("first line %q", lines.Text())
	}
	return url, stderr
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunTLS serves wss:// with -tls-cert and -tls-key, and per-user
// tokens set through the admin API over HTTPS.
func TestRunTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	const admin = "admin-token-0123456789"
	url, stderr := startRun(t, "-tls-cert", certFile, "-tls-key", keyFile, "-admin-token", admin)
	if !strings.HasPrefix(url, "wss://") {
		t.Fatalf("listening on %s, want wss://", url)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	base := "https://" + strings.TrimPrefix(url, "wss://")
	for _, u := range []string{"alice", "bob"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/users/"+u+"/token", strings.NewReader(`{"token":"t-`+u+`"}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PUT token: %s", resp.Status)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	dial := func(uid string) *wkclient.Client {
		c, err := wkclient.Dial(ctx, url, wkclient.Options{UID: uid, Token: "t-" + uid, HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	alice, bob := dial("alice"), dial("bob")
	if _, err := alice.Send(ctx, "bob", wkproto.ChannelPerson, []byte(`{"content":"over TLS","type":1}`)); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := bob.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := p.(*wkproto.RecvPacket); ok {
			if string(r.Payload) != `{"content":"over TLS","type":1}` {
				t.Fatalf("bob got %q", r.Payload)
			}
			break
		}
	}
	if s := stderr.String(); strings.Contains(s, "INSECURE") || strings.Contains(s, "DEVELOPMENT") {
		t.Fatalf("warned with -admin-token:\n%s", s)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// to dir and returns the files and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wkim test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestRunModes: without token flags the server says loudly that it runs
// in development mode; flags that contradict each other are refused.
func TestRunModes(t *testing.T) {
	url, stderr := startRun(t)
	if !strings.Contains(stderr.String(), "DEVELOPMENT MODE") {
		t.Fatalf("no development-mode warning:\n%s", stderr.String())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := wkclient.Dial(ctx, url, wkclient.Options{UID: "anyone", Token: "anything"})
	if err != nil {
		t.Fatalf("development mode refused a login: %v", err)
	}
	_ = c.Close()
	for _, args := range [][]string{
		{"-token", "a", "-admin-token", "admin-token-0123456789"},
		{"-tls-cert", "cert.pem"},
		{"-admin-token", "short"},
	} {
		if err := run(t.Context(), append([]string{"-addr", "127.0.0.1:0"}, args...), io.Discard, io.Discard); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}

func TestGroupFlag(t *testing.T) {
	g := groupFlag{}
	for _, v := range []string{"g1=a,b", "g1=c", "g2= x , ,y"} {
		if err := g.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if strings.Join(g["g1"], ",") != "a,b,c" || strings.Join(g["g2"], ",") != "x,y" {
		t.Fatalf("groups %v", g)
	}
	for _, bad := range []string{"nogroup", "=a,b"} {
		if err := g.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
