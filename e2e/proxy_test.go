package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a TCP relay standing between the agent and the broker's MQTT
// port, so a test can cut the network and restore it.
type proxy struct {
	addr string
	ln   net.Listener

	mu      sync.Mutex
	target  string
	down    bool          // the network is cut
	latency time.Duration // added to every chunk relayed, each way
	conns   map[net.Conn]struct{}
}

// startProxy relays 127.0.0.1:<free port> to target until the test ends
// (target may be set later with setTarget, before the first connection).
func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	done := make(chan struct{})
	go func() { defer close(done); p.accept() }()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		<-done
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

// relay pipes one client connection to the target; while the network is
// cut it closes the connection at once (the dial fails as it would with the
// link down).
func (p *proxy) relay(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c] = struct{}{}
	target := p.target
	p.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		up.Close()
		p.drop(c)
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = p.pipe(up, c); up.Close(); c.Close() }()
	go func() { defer wg.Done(); _ = p.pipe(c, up); up.Close(); c.Close() }()
	wg.Wait()
	p.drop(c)
	p.drop(up)
}

// pipe copies src to dst, holding each chunk for the current latency.
func (p *proxy) pipe(dst, src net.Conn) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d := p.latency
			p.mu.Unlock()
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// setLatency delays every relayed chunk by d from now on.
func (p *proxy) setLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// reset aborts every relayed connection with a TCP RST (SO_LINGER 0);
// new connections are let through.
func (p *proxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

func (p *proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// setTarget sets the address new connections are relayed to.
func (p *proxy) setTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// cut breaks every relayed connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.closeAll()
}

// restore lets connections through again.
func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
