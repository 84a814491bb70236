package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fulcrumlb/fulcrum/internal/testpki"
)

// grpcBackend is a gRPC real server with the standard health service,
// counting the calls it serves.
type grpcBackend struct {
	addr   string
	health *health.Server
	calls  atomic.Int64
}

// newGRPCBackend starts a gRPC server: h2c when cert is nil, else TLS.
func newGRPCBackend(t *testing.T, cert *tls.Certificate) *grpcBackend {
	t.Helper()
	b := &grpcBackend{health: health.NewServer()}
	opts := []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			b.calls.Add(1)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			b.calls.Add(1)
			return h(srv, ss)
		}),
	}
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
	} else {
		opts = append(opts, grpc.Creds(insecure.NewCredentials()))
	}
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, b.health)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return b
}

// TestGRPC: gRPC passes through fulcrum to real servers that speak HTTP/2,
// one h2c and one over TLS (verified against tls_ca): a unary call and its
// grpc-status trailer (NotFound for an unknown service), a server stream
// whose messages arrive one by one as the server sends them, calls spread
// over both real servers, the access log saying HTTP/2.0.
func TestGRPC(t *testing.T) {
	ca := testpki.NewCA(t, "grpc")
	rsCert := ca.TLSCert(t, testpki.Leaf{CN: "grpc real server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, NotAfter: time.Now().Add(24 * time.Hour)})
	plain, secure := newGRPCBackend(t, nil), newGRPCBackend(t, &rsCert)
	cert, key := issue(t, ca, "www.example.com", false, "www.example.com")
	vip := freeAddr(t)
	f := startFulcrum(t, config{services: []service{{
		name:   "grpc",
		listen: []string{vip},
		opts:   tlsTable("", [2]string{cert, key}),
		real: []real{
			{name: "h2c", address: plain.addr, opts: "protocol = \"h2\"\n"},
			{name: "h2tls", address: secure.addr, opts: "protocol = \"h2\"\ntls = true\ntls_ca = \"" + ca.File + "\"\n"},
		},
	}}})

	conn, err := grpc.NewClient("passthrough:///"+vip, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: ca.Pool(), ServerName: "www.example.com",
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		for i := range 6 {
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Check #%d: %v", i, err)
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check #%d: %v, want SERVING", i, resp.Status)
			}
		}
		if plain.calls.Load() == 0 || secure.calls.Load() == 0 {
			t.Errorf("calls: h2c %d, h2tls %d; want both real servers used", plain.calls.Load(), secure.calls.Load())
		}
	})

	t.Run("status from trailers", func(t *testing.T) {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Check of an unknown service: %v, want NotFound", err)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		const svc = "watched"
		set := func(st healthpb.HealthCheckResponse_ServingStatus) {
			plain.health.SetServingStatus(svc, st) // the stream is on one of them
			secure.health.SetServingStatus(svc, st)
		}
		set(healthpb.HealthCheckResponse_SERVING)
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		// Each status must reach the client before the next is set: a
		// proxy that buffered the stream would deliver none of them.
		for i, want := range []healthpb.HealthCheckResponse_ServingStatus{
			healthpb.HealthCheckResponse_SERVING,
			healthpb.HealthCheckResponse_NOT_SERVING,
			healthpb.HealthCheckResponse_SERVING,
			healthpb.HealthCheckResponse_NOT_SERVING,
		} {
			if i > 0 {
				set(want)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("update %d: %v", i, err)
			}
			if resp.Status != want {
				t.Errorf("update %d: %v, want %v", i, resp.Status, want)
			}
		}
	})

	e := f.waitLog(5*time.Second, "for a gRPC call", func(e logEntry) bool {
		return e.str("logger") == "access" && e.str("target") == "/grpc.health.v1.Health/Check"
	})
	if e.str("proto") != "HTTP/2.0" || e.str("method") != "POST" || e.num("status") != 200 {
		t.Errorf("access log %v: want POST, HTTP/2.0, 200", e)
	}
}
