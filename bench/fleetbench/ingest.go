package main

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // SQLite driver "sqlite", to read ggfleet's health rows

	"github.com/ggfleet/ggfleet/bench/benchpki"
	"github.com/ggfleet/ggfleet/bench/loadgen"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
)

// P5: health ingestion. Every simulated agent publishes -burst health
// reports back to back (QoS 1, one in flight each, on its own mTLS
// session), all agents at once. On ggfleet the figure that matters is
// end-to-end: from the first report to every agent's health row in the
// database holding its last report. The reference is Mosquitto alone
// (docs/mosquitto.md's configuration, nothing subscribed) acknowledging
// the same burst from the same agents; the embedded MQTT broker alone
// (handlers that only count) is measured the same way.

// ingestResult is one P5 measurement.
type ingestResult struct {
	Reports int           // reports acknowledged
	Lost    int           // reports not acknowledged within the agents' AckTimeout
	Acked   time.Duration // first report → last PUBACK at the agents
	Stored  time.Duration // first report → every agent's last report in the database (ggfleet only)
	// ggfleet only: the health reports the agents had acknowledged while
	// the burst ran (periodic ones included), and how many of them
	// reached ggfleet's handlers (its /metrics, all replicas). With
	// Mosquitto in between, Mosquitto acknowledges and may still drop.
	Expected, Handled int64
	// RSS of the ggfleet serve processes (summed over replicas): just
	// before the burst, the most seen while it ran (sampled every 100 ms),
	// and once it was stored.
	RSSBefore, RSSMax, RSSAfter int64
}

func (r ingestResult) ackedRate() float64  { return rate(r.Reports, r.Acked) }
func (r ingestResult) storedRate() float64 { return rate(r.Reports, r.Stored) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// burstFleet has every agent of f publish reports health reports at once
// and returns the burst's figures and each agent's last report time.
func burstFleet(ctx context.Context, f *fleet, reports int) (ingestResult, map[string]time.Time, error) {
	var (
		mu   sync.Mutex
		res  ingestResult
		last = make(map[string]time.Time, len(f.agents))
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for _, a := range f.agents {
		wg.Go(func() {
			br, err := a.Burst(ctx, reports)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			res.Reports += br.Acked
			res.Lost += br.Lost
			last[a.Name()] = br.Last
		})
	}
	wg.Wait()
	res.Acked = time.Since(start)
	if len(errs) > 0 {
		return res, last, fmt.Errorf("burst: %w", errs[0])
	}
	return res, last, nil
}

// ingestGgfleet runs P5 on the fleet connected to ggfleet: the burst, then
// polling the database every 20 ms until every agent's health row holds
// its last report. pids are the ggfleet serve processes, whose memory is
// sampled.
func ingestGgfleet(ctx context.Context, f *fleet, reports int, db *sql.DB, pids []int, clients []*apiClient) (ingestResult, error) {
	res := ingestResult{RSSBefore: rssSum(pids)}
	acked0 := f.healthAcked() // before the count: a report acked is counted before it is handled
	handled0, err := handledHealth(ctx, clients)
	if err != nil {
		return res, err
	}
	sctx, stop := context.WithCancel(ctx)
	sampled := make(chan int64)
	go func() { // owned here: stopped and waited for below
		peak := res.RSSBefore
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				sampled <- peak
				return
			case <-tick.C:
				peak = max(peak, rssSum(pids))
			}
		}
	}()
	start := time.Now()
	br, last, err := burstFleet(ctx, f, reports)
	res.Reports, res.Lost, res.Acked = br.Reports, br.Lost, br.Acked
	if err == nil {
		err = waitUntil(ctx, 10*time.Minute, func() bool {
			n, qerr := storedHealth(ctx, db, last)
			if qerr != nil {
				err = qerr
				return true
			}
			return n == len(last)
		})
		res.Stored = time.Since(start)
	}
	if err == nil {
		// Everything acknowledged should reach the handlers soon after.
		_ = waitUntil(ctx, 30*time.Second, func() bool {
			res.Expected = f.healthAcked() - acked0
			n, herr := handledHealth(ctx, clients)
			if herr != nil {
				err = herr
				return true
			}
			res.Handled = n - handled0
			return res.Handled >= res.Expected
		})
	}
	stop()
	res.RSSMax = <-sampled
	res.RSSAfter = rssSum(pids)
	return res, err
}

// handledHealth sums ggfleet_mqtt_messages_handled_total{topic="health"}
// over the replicas.
func handledHealth(ctx context.Context, clients []*apiClient) (int64, error) {
	var sum int64
	for _, c := range clients {
		n, err := c.metric(ctx, `ggfleet_mqtt_messages_handled_total{topic="health"}`)
		if err != nil {
			return 0, err
		}
		sum += int64(n)
	}
	return sum, nil
}

// storedHealth counts the agents whose health row holds (at least) their
// last report. The broker stores report times in milliseconds.
func storedHealth(ctx context.Context, db *sql.DB, last map[string]time.Time) (int, error) {
	rows, err := db.QueryContext(ctx, "SELECT core, reported_at FROM core_health")
	if err != nil {
		return 0, fmt.Errorf("read health rows: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var core string
		var at int64
		if err := rows.Scan(&core, &at); err != nil {
			return 0, fmt.Errorf("read health rows: %w", err)
		}
		if want, ok := last[core]; ok && at >= want.UnixMilli() {
			n++
		}
	}
	return n, rows.Err()
}

// ingestMosquittoAlone is P5's reference: the same n agents (certificates
// from a bench CA) on Mosquitto with docs/mosquitto.md's configuration,
// nothing subscribed, the same burst.
func ingestMosquittoAlone(ctx context.Context, dir string, n, reports int, agentCfg loadgen.Config) (ingestResult, error) {
	things := make([]string, n)
	for i := range things {
		things[i] = coreName(i)
	}
	p, err := benchpki.New("fleetbench P5 CA", things)
	if err != nil {
		return ingestResult{}, err
	}
	mdir, addr, err := prepareMosquitto(dir)
	if err != nil {
		return ingestResult{}, err
	}
	if err := p.WriteMosquittoFiles(mdir); err != nil {
		return ingestResult{}, err
	}
	srvCA, err := os.ReadFile(filepath.Join(mdir, "server-ca.pem"))
	if err != nil {
		return ingestResult{}, err
	}
	mosq, err := mosquittotest.Launch(mdir, addr)
	if err != nil {
		return ingestResult{}, err
	}
	defer mosq.Stop()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srvCA)
	ids := make([]*loadgen.Identity, n)
	for i := range ids {
		ids[i] = &loadgen.Identity{Name: p.Things[i], Cert: p.Agents[i], Roots: roots, Endpoint: addr}
	}
	f, err := startFleet(ctx, ids, agentCfg)
	if err != nil {
		return ingestResult{}, err
	}
	defer f.stop()
	settle(ctx)
	res, _, err := burstFleet(ctx, f, reports)
	return res, err
}

// healthDB opens the cluster's database read-only enough for P5's polling.
func (c *cluster) healthDB() (*sql.DB, error) {
	if c.pg != nil {
		return sql.Open("pgx", c.pg.url)
	}
	path := filepath.Join(c.replicas[0].dataDir, "ggfleet.db")
	return sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
}

// pids returns the replicas' process ids.
func (c *cluster) pids() []int {
	var out []int
	for _, r := range c.replicas {
		out = append(out, r.cmd.Process.Pid)
	}
	return out
}

// rssSum is the summed VmRSS of pids in bytes (0 where unreadable).
func rssSum(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					sum += kb * 1024
				}
			}
		}
	}
	return sum
}
