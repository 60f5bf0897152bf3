package main

import (
	"fmt"
	"strings"
	"time"
)

// The targets.
var (
	targetP1 = target{AtLeast: true, Bound: 0.5} // API provisioning rate / crypto-only rate
	targetP3 = target{Bound: 3}                  // p99 while P1 runs / p99 idle
	targetP4 = target{Bound: 2}                  // time to all Success / physical bound
	// P5: the embedded broker's acked rate / Mosquitto alone's, and
	// ggfleet's end-to-end ingest rate / Mosquitto alone's acked rate.
	targetP5Broker = target{AtLeast: true, Bound: 1}
	targetP5Ingest = target{AtLeast: true, Bound: 0.5}
	// P7: connects/s / in-process TLS handshakes/s, and connects/s against
	// twice AWS IoT Core's default connect rate.
	targetP7    = target{AtLeast: true, Bound: 0.5}
	targetP7AWS = target{AtLeast: true, Bound: 2}
)

// notifyLimit is P4's second target: every agent has its document within it.
const notifyLimit = time.Second

// result is what one configuration measured. Err is set when the run of
// the configuration failed; the figures measured before it are kept.
type result struct {
	Config config
	Err    error

	// P1
	Cores     int
	Failed    int // cores whose item did not end Success
	P1Elapsed time.Duration
	P1Rate    float64 // cores/s through the API
	// The crypto-only rate (key + certificate + PEM per second in-process,
	// all CPUs) just before and just after P1; the machine's load drifts,
	// so P1 is compared with their mean.
	CryptoBefore, CryptoAfter float64

	// P3: GET /cores/{name} and GET /fleet/summary, idle and while P1 runs.
	IdleCore, LoadCore       latencies
	IdleSummary, LoadSummary latencies

	// P4
	Agents       int
	ApplyDelay   time.Duration
	P4Elapsed    time.Duration // submission to the task's Success
	P4Notify     time.Duration // submission to the last agent receiving its document
	P4Received   int           // agents that received the document
	P4Status     string        // the deployment task's final status
	BoundElapsed time.Duration // the same exchange driven directly over the same MQTT broker
	BoundNotify  time.Duration
	LostReports  int64 // agents' QoS 1 reports not acknowledged (ggfleet run)

	// P5: the same agents' burst of health reports through ggfleet, on the
	// embedded broker alone (configurations whose agents use it) and on
	// Mosquitto alone.
	P5, P5Embedded, P5Mosquitto ingestResult

	// P7: a reconnect storm of enrolled agents.
	P7 stormResult

	LoadAvgBefore string
	LoadAvgAfter  string
}

func (r result) p1Ratio() float64 { return ratio(r.P1Rate, r.cryptoRate()) }

// cryptoRate is the mean of the crypto-only rates around P1 (one of them
// when only one was measured).
func (r result) cryptoRate() float64 {
	if r.CryptoAfter == 0 {
		return r.CryptoBefore
	}
	return (r.CryptoBefore + r.CryptoAfter) / 2
}
func (r result) p3CoreRatio() float64 {
	return ratio(float64(r.LoadCore.P99), float64(r.IdleCore.P99))
}
func (r result) p3SummaryRatio() float64 {
	return ratio(float64(r.LoadSummary.P99), float64(r.IdleSummary.P99))
}
func (r result) p4Ratio() float64 { return ratio(r.P4Elapsed.Seconds(), r.BoundElapsed.Seconds()) }

// The P5 ratios are NaN ("not measured") when a side did not run: the
// embedded broker alone is not measured where the agents use Mosquitto.
func (r result) p5BrokerRatio() float64 {
	if r.P5Embedded.Reports == 0 {
		return ratio(0, 0)
	}
	return ratio(r.P5Embedded.ackedRate(), r.P5Mosquitto.ackedRate())
}
func (r result) p5IngestRatio() float64 {
	if r.P5.Reports == 0 {
		return ratio(0, 0)
	}
	return ratio(r.P5.storedRate(), r.P5Mosquitto.ackedRate())
}

func (r result) p7Ratio() float64 { return ratio(r.P7.Rate, r.P7.TLSRate) }
func (r result) p7AWSRatio() float64 {
	if r.P7.Agents == 0 {
		return ratio(0, 0) // not measured
	}
	return ratio(r.P7.Rate, awsConnectRate)
}

// notifyVerdict says whether every agent had its document within notifyLimit.
func (r result) notifyVerdict() string {
	switch {
	case r.Agents == 0 || r.P4Received == 0:
		return "not measured"
	case r.P4Received == r.Agents && r.P4Notify <= notifyLimit:
		return "met"
	}
	return "**not met**"
}

// handledVerdict says whether every health report acknowledged during P5
// reached ggfleet's handlers.
func (r result) handledVerdict() string {
	switch {
	case r.P5.Expected == 0:
		return "not measured"
	case r.P5.Handled >= r.P5.Expected:
		return "met"
	}
	return "**not met**"
}

// mqttName is the MQTT broker the agents used.
func (c config) mqttName() string {
	if c.Mosquitto {
		return "one shared Mosquitto (`--mqtt-url`)"
	}
	return "embedded"
}

// apiOnlyName says how many replicas were API-only, if any.
func (c config) apiOnlyName() string {
	if c.APIOnly == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of them API-only, `--workers 0`, taking P1's and P3's requests)", c.APIOnly)
}

// dbName is the database the replicas shared.
func (c config) dbName() string {
	if c.Postgres {
		return "PostgreSQL"
	}
	return "SQLite"
}

// header is the run's context: when, where, with what.
type header struct {
	Command  string
	Started  time.Time
	Elapsed  time.Duration
	Machine  string
	Workers  int
	Interval time.Duration // P3 probe pacing
	Idle     time.Duration // P3 idle phase
	Health   time.Duration // agents' health interval
}

// markdown renders the report: one summary table across configurations,
// then each configuration's figures with their references.
func markdown(h header, results []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s UTC by `%s` (%s in all).\n\n", h.Started.UTC().Format("2006-01-02 15:04"), h.Command, h.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "Machine: %s.\n\n", h.Machine)
	workers := "its default"
	if h.Workers > 0 {
		workers = fmt.Sprint(h.Workers)
	}
	fmt.Fprintf(&b, "Setup: `ggfleet serve --workers` %s; P3 sends one request per endpoint every %s (idle phase %s, after P1); simulated agents report health every %s.\n\n",
		workers, h.Interval, h.Idle, h.Health)
	fmt.Fprintf(&b, "| configuration | P1 API / crypto (≥ 0.5×) | P3 `GET /cores/{name}` p99 load / idle (≤ 3×) | P3 `GET /fleet/summary` p99 load / idle (≤ 3×) | P4 all Success / bound (≤ 2×) | P4 all notified (≤ 1 s) | P5 embedded / Mosquitto acked (≥ 1×) | P5 ggfleet stored / Mosquitto acked (≥ 0.5×) | P7 connects / TLS handshakes (≥ 0.5×) | P7 connects / 500/s (≥ 2×) |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Config.Name,
			cell(r.p1Ratio(), targetP1), cell(r.p3CoreRatio(), targetP3), cell(r.p3SummaryRatio(), targetP3),
			cell(r.p4Ratio(), targetP4), notifyCell(r), cell(r.p5BrokerRatio(), targetP5Broker), cell(r.p5IngestRatio(), targetP5Ingest),
			cell(r.p7Ratio(), targetP7), cell(r.p7AWSRatio(), targetP7AWS))
	}
	for _, r := range results {
		c := r.Config
		fmt.Fprintf(&b, "\n### %s: %s, %d replica(s)%s, MQTT %s\n\n", c.Name, c.dbName(), c.Replicas, c.apiOnlyName(), c.mqttName())
		if r.Err != nil {
			fmt.Fprintf(&b, "**The run failed:** %s\n\n", oneLine(r.Err.Error()))
		}
		fmt.Fprintf(&b, "Load average (1, 5, 15 min) before: %s; after: %s.\n\n", r.LoadAvgBefore, r.LoadAvgAfter)
		fmt.Fprintf(&b, "| figure | measured | reference (same run) | ratio | target |\n|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| P1: %d cores through `POST /coreTasks`, submission to every item final (%d failed) | %.1f cores/s (%s) | crypto only: %.1f keys+certificates/s (%.1f before P1, %.1f after) | %s | %s %s |\n",
			r.Cores, r.Failed, r.P1Rate, r.P1Elapsed.Round(100*time.Millisecond), r.cryptoRate(), r.CryptoBefore, r.CryptoAfter, num(r.p1Ratio()), targetP1, targetP1.verdict(r.p1Ratio()))
		fmt.Fprintf(&b, "| P3: `GET /cores/{name}` p99 while P1 runs | %s (p50 %s, n=%d, %d errors) | idle: %s (p50 %s, n=%d, %d errors) | %s | %s %s |\n",
			ms(r.LoadCore.P99), ms(r.LoadCore.P50), r.LoadCore.N, r.LoadCore.Errors, ms(r.IdleCore.P99), ms(r.IdleCore.P50), r.IdleCore.N, r.IdleCore.Errors,
			num(r.p3CoreRatio()), targetP3, targetP3.verdict(r.p3CoreRatio()))
		fmt.Fprintf(&b, "| P3: `GET /fleet/summary` p99 while P1 runs | %s (p50 %s, n=%d, %d errors) | idle: %s (p50 %s, n=%d, %d errors) | %s | %s %s |\n",
			ms(r.LoadSummary.P99), ms(r.LoadSummary.P50), r.LoadSummary.N, r.LoadSummary.Errors, ms(r.IdleSummary.P99), ms(r.IdleSummary.P50), r.IdleSummary.N, r.IdleSummary.Errors,
			num(r.p3SummaryRatio()), targetP3, targetP3.verdict(r.p3SummaryRatio()))
		fmt.Fprintf(&b, "| P4: deployment to %d agents (apply delay %s), submission to task %s | %s | physical bound: %s | %s | %s %s |\n",
			r.Agents, r.ApplyDelay, orDash(r.P4Status), dur(r.P4Elapsed), dur(r.BoundElapsed), num(r.p4Ratio()), targetP4, targetP4.verdict(r.p4Ratio()))
		fmt.Fprintf(&b, "| P4: submission to the last agent receiving its document (%d/%d received) | %s | bound: %s | | ≤ 1 s %s |\n",
			r.P4Received, r.Agents, dur(r.P4Notify), dur(r.BoundNotify), r.notifyVerdict())
		if r.P5.Reports > 0 || r.P5Mosquitto.Reports > 0 {
			m := r.P5Mosquitto
			fmt.Fprintf(&b, "| P5: %d health reports (%d agents at once, QoS 1, one in flight each) acknowledged by ggfleet | %.0f reports/s (%s, %d lost) | Mosquitto alone: %.0f reports/s (%s, %d lost) | %s | |\n",
				r.P5.Reports, r.Agents, r.P5.ackedRate(), dur(r.P5.Acked), r.P5.Lost, m.ackedRate(), dur(m.Acked), m.Lost, num(ratio(r.P5.ackedRate(), m.ackedRate())))
			fmt.Fprintf(&b, "| P5: the same, first report → every agent's last report in the database | %.0f reports/s (%s) | Mosquitto alone, acknowledged | %s | %s %s |\n",
				r.P5.storedRate(), dur(r.P5.Stored), num(r.p5IngestRatio()), targetP5Ingest, targetP5Ingest.verdict(r.p5IngestRatio()))
			fmt.Fprintf(&b, "| P5: health reports acknowledged during the burst that reached ggfleet's handlers (its /metrics) | %d of %d | | | all %s |\n",
				r.P5.Handled, r.P5.Expected, r.handledVerdict())
			if r.P5Embedded.Reports > 0 {
				e := r.P5Embedded
				fmt.Fprintf(&b, "| P5: the same on the embedded MQTT broker alone (handlers that only count) | %.0f reports/s (%s, %d lost) | Mosquitto alone, acknowledged | %s | %s %s |\n",
					e.ackedRate(), dur(e.Acked), e.Lost, num(r.p5BrokerRatio()), targetP5Broker, targetP5Broker.verdict(r.p5BrokerRatio()))
			}
			fmt.Fprintf(&b, "| P5: ggfleet serve RSS (all replicas) before the burst / most during it / after | %s / %s / %s | | | bounded |\n",
				mib(r.P5.RSSBefore), mib(r.P5.RSSMax), mib(r.P5.RSSAfter))
		}
		if r.P7.Agents > 0 {
			fmt.Fprintf(&b, "| P7: %d agents opening mTLS MQTT sessions at once (%d failed) | %.0f connects/s (%s) | bare TLS handshakes in process: %.0f/s (%s, %d failed) | %s | %s %s |\n",
				r.P7.Agents, r.P7.Failed, r.P7.Rate, dur(r.P7.Wall), r.P7.TLSRate, dur(r.P7.TLSWall), r.P7.TLSFails, num(r.p7Ratio()), targetP7, targetP7.verdict(r.p7Ratio()))
			fmt.Fprintf(&b, "| P7: the same against AWS IoT Core's default connect rate | %.0f connects/s | %d/s | %s | %s %s |\n",
				r.P7.Rate, awsConnectRate, num(r.p7AWSRatio()), targetP7AWS, targetP7AWS.verdict(r.p7AWSRatio()))
		}
		fmt.Fprintf(&b, "| agents' reports not acknowledged (lost) | %d | | | 0 |\n", r.LostReports)
	}
	return b.String()
}

func cell(r float64, t target) string {
	if v := t.verdict(r); v != "met" {
		return num(r) + " " + v
	}
	return num(r) + " met"
}

func notifyCell(r result) string {
	return dur(r.P4Notify) + " " + r.notifyVerdict()
}

func num(f float64) string {
	switch {
	case f != f: // NaN
		return "–"
	case f < 0.1:
		return fmt.Sprintf("%.3f×", f) // small ratios keep two significant digits
	}
	return fmt.Sprintf("%.2f×", f)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func dur(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return d.Round(10 * time.Millisecond).String()
}

func mib(b int64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
