// Package compat drives the real ripstream binary with the official AWS SDK
// for Go v2, as an application would: only the endpoint differs from AWS.
package compat

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
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

const region = "us-east-1"

// server is one ripstream process on an ephemeral loopback port with its own
// temporary data directory.
type server struct {
	URL  string
	cmd  *exec.Cmd
	dir  string
	logf string
}

func binary() string {
	if b := os.Getenv("RIPSTREAM_BIN"); b != "" {
		return b
	}
	return filepath.Join("..", "..", "target", "debug", "ripstream")
}

func startServer(extra ...string) (*server, error) {
	dir, err := os.MkdirTemp("", "ripstream-compat-go-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, logf: filepath.Join(dir, "server.log")}
	logFile, err := os.Create(s.logf)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data")}, extra...)
	s.cmd = exec.Command(binary(), args...)
	s.cmd.Stderr = logFile
	// If the test binary dies (a panic, a -timeout), the kernel stops the
	// server too, so no server outlives its suite.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", binary(), err)
	}
	lines := bufio.NewReader(stdout)
	first := make(chan string, 1)
	go func() {
		line, _ := lines.ReadString('\n')
		first <- line
		// Keep draining stdout so the server never blocks on the pipe.
		io.Copy(io.Discard, lines)
	}()
	select {
	case line := <-first:
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[len(fields)-1], "http") {
			s.Stop()
			log, _ := os.ReadFile(s.logf)
			return nil, fmt.Errorf("server did not start: %q\n%s", line, log)
		}
		s.URL = fields[len(fields)-1]
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, errors.New("server printed no URL within 60 s")
	}
	return s, nil
}

// startTestServer starts a server stopped when the test ends, pass or fail.
func startTestServer(t *testing.T, extra ...string) *server {
	t.Helper()
	s, err := startServer(extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(s.logf)
			t.Logf("server log:\n%s", tail(string(log), 4000))
		}
		s.Stop()
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (s *server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(s.dir)
}

// shared is the anonymous cleartext server most tests use.
var shared *server

func TestMain(m *testing.M) {
	var err error
	shared, err = startServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// awsConfig is what an application builds: static keys, a region, and the
// SDK's standard retryer, which retries the per-shard throttling the server
// enforces as AWS does.
func awsConfig(t *testing.T, key, secret string, opts ...func(*config.LoadOptions) error) aws.Config {
	t.Helper()
	base := []func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 6 })
		}),
	}
	if key != "" {
		base = append(base, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(key, secret, "")))
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func kinesisClient(t *testing.T, s *server) *kinesis.Client {
	cfg := awsConfig(t, "AKIDCOMPATGO", "secret")
	return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(s.URL) })
}

func dynamoClient(t *testing.T, s *server) *dynamodb.Client {
	cfg := awsConfig(t, "AKIDCOMPATGO", "secret")
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.URL) })
}

func uniqueName(prefix string) string {
	b := make([]byte, 5)
	rand.Read(b)
	return fmt.Sprintf("%s-%x", prefix, b)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return c
}

// createStream creates a stream, waits for it with the SDK's waiter and
// deletes it when the test ends.
func createStream(t *testing.T, c *kinesis.Client, shards int32) string {
	t.Helper()
	name := uniqueName("go")
	if _, err := c.CreateStream(ctx(t), &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	waitActive(t, c, name)
	t.Cleanup(func() {
		c.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true)})
	})
	return name
}

func waitActive(t *testing.T, c *kinesis.Client, name string) {
	t.Helper()
	w := kinesis.NewStreamExistsWaiter(c, func(o *kinesis.StreamExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = 500 * time.Millisecond
	})
	if err := w.Wait(ctx(t), &kinesis.DescribeStreamInput{StreamName: aws.String(name)}, 30*time.Second); err != nil {
		t.Fatalf("StreamExists waiter: %v", err)
	}
}

func shardIDs(t *testing.T, c *kinesis.Client, name string) []string {
	t.Helper()
	out, err := c.ListShards(ctx(t), &kinesis.ListShardsInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatalf("ListShards: %v", err)
	}
	var ids []string
	for _, s := range out.Shards {
		ids = append(ids, aws.ToString(s.ShardId))
	}
	return ids
}

// readShard reads a shard from TRIM_HORIZON until a GetRecords call returns
// nothing new (or the shard's end).
func readShard(t *testing.T, c *kinesis.Client, name, shard string) []types.Record {
	t.Helper()
	it, err := c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		t.Fatalf("GetShardIterator: %v", err)
	}
	var records []types.Record
	iter := it.ShardIterator
	for iter != nil {
		out, err := c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: iter})
		if err != nil {
			t.Fatalf("GetRecords: %v", err)
		}
		records = append(records, out.Records...)
		if len(out.Records) == 0 {
			break
		}
		iter = out.NextShardIterator
	}
	return records
}

// selfSignedCert writes a CA-less self-signed certificate for 127.0.0.1 and
// localhost, and returns its paths and a pool that trusts it.
func selfSignedCert(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "ripstream compat"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath = filepath.Join(dir, "cert.pem")
	keyPath = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// protoRecorder wraps the SDK's HTTP client and remembers the protocol of
// each response, so a test can tell HTTP/2 from HTTP/1.1.
type protoRecorder struct {
	inner  aws.HTTPClient
	mu     sync.Mutex
	protos map[string]bool
}

func (p *protoRecorder) Do(r *http.Request) (*http.Response, error) {
	resp, err := p.inner.Do(r)
	if resp != nil {
		p.mu.Lock()
		p.protos[resp.Proto] = true
		p.mu.Unlock()
	}
	return resp, err
}

func (p *protoRecorder) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k := range p.protos {
		out = append(out, k)
	}
	return out
}

// tlsHTTPClient is the SDK's own buildable client trusting pool, wrapped in
// a protoRecorder.
func tlsHTTPClient(pool *x509.CertPool) *protoRecorder {
	inner := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{}
		}
		tr.TLSClientConfig.RootCAs = pool
	})
	return &protoRecorder{inner: inner, protos: map[string]bool{}}
}
