package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// sideServer is a plain-HTTP listener beside the API for tools rather than
// clients: Prometheus (--metrics-listen) and Go's profiler
// (--pprof-listen). Neither asks for a token, which is why both are off
// unless asked for and the profiler's only listens on loopback.
type sideServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenSide opens addr for h; flag names the option in errors.
func listenSide(flag, addr string, h http.Handler) (*sideServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w", flag, addr, err)
	}
	return &sideServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// pprofHandler serves the profiles a Go developer asks an operator for:
// /debug/pprof/ (heap, goroutine, allocs, block, mutex, …),
// /debug/pprof/profile?seconds=N (CPU), /debug/pprof/trace?seconds=N
// (execution trace) and /debug/pprof/symbol. Not /debug/pprof/cmdline:
// the command line may hold a database password.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/cmdline", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not served: the command line may hold secrets", http.StatusNotFound)
	})
	return mux
}
