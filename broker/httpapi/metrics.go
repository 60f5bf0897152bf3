package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// TaskCounter counts the broker's tasks, read at every scrape of
// ggfleet_tasks. sqlstore.DB implements it.
type TaskCounter interface {
	// CountTasks returns the number of tasks by kind ("core", "device",
	// "deployment") and then by status ("Waiting", "InProgress", …).
	CountTasks(ctx context.Context) (map[string]map[string]int, error)
}

// MetricsConfig is what NewMetrics reads its gauges from. Nil fields leave
// their gauge out.
type MetricsConfig struct {
	Tasks TaskCounter
	// MQTTConnections returns the number of MQTT clients connected now.
	MQTTConnections func() int
	// Logger receives scrape errors (a task count that failed); nil discards.
	Logger *slog.Logger
}

// Metrics is the broker's Prometheus registry: HTTP request counts and
// durations by route pattern, tasks by kind and status, MQTT connections,
// and the Go runtime and process collectors. A nil *Metrics instruments
// nothing.
type Metrics struct {
	reg      *prometheus.Registry
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// scrapeTimeout bounds the task count made during a scrape.
const scrapeTimeout = 5 * time.Second

// unmatchedRoute is the route label of requests no route matched, so raw
// paths never become label values.
const unmatchedRoute = "unmatched"

// NewMetrics builds the registry.
func NewMetrics(cfg MetricsConfig) *Metrics {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: cfg.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggfleet_http_requests_total",
			Help: "HTTP requests served, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ggfleet_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	m.reg.MustRegister(m.requests, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Tasks != nil {
		m.reg.MustRegister(&taskCollector{counter: cfg.Tasks, log: cfg.Logger, desc: prometheus.NewDesc(
			"ggfleet_tasks", "Tasks by kind (core, device, deployment) and status.", []string{"kind", "status"}, nil)})
	}
	if cfg.MQTTConnections != nil {
		conns := cfg.MQTTConnections
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ggfleet_mqtt_connections",
			Help: "MQTT clients connected to the embedded broker.",
		}, func() float64 { return float64(conns()) }))
	}
	return m
}

// Registerer lets other parts of the broker add their own collectors.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Handler serves the metrics in the Prometheus text format, without
// authentication: for the separate --metrics-listen listener. On the API
// listener GET /metrics serves the same registry behind the bearer token.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      printlnLogger{m.log},
	})
}

// instrument counts and times h's requests under the route pattern. It
// returns h itself on a nil *Metrics.
func (m *Metrics) instrument(route string, h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	duration := m.duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		completed := false
		defer func() {
			code := sw.status
			switch {
			case !completed && code == 0:
				code = http.StatusInternalServerError // a panic; the recoverer answers 500
			case code == 0:
				code = http.StatusOK
			}
			m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			duration.Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
		completed = true
	})
}

// metrics serves GET /metrics on the API listener (token required).
func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	if a.d.Metrics == nil {
		writeMessage(w, r, http.StatusNotFound, "metrics are not enabled on this broker")
		return
	}
	a.d.Metrics.Handler().ServeHTTP(w, r)
}

// statusWriter remembers the status code written. It keeps Flush working
// for server-sent events, and Unwrap lets http.ResponseController reach the
// connection.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends buffered data to the client (SSE handlers assert http.Flusher).
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// taskCollector reads task counts at scrape time. Every known kind and
// status is reported, as 0 when there are none, so series do not vanish.
type taskCollector struct {
	counter TaskCounter
	log     *slog.Logger
	desc    *prometheus.Desc
}

func (c *taskCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *taskCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	counts, err := c.counter.CountTasks(ctx)
	if err != nil {
		c.log.Warn("metrics: count tasks", "err", err)
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("count tasks: %w", err))
		return
	}
	kinds := []string{string(tasks.KindCore), string(tasks.KindDevice), string(tasks.KindDeployment)}
	statuses := []string{cdf.StatusWaiting, cdf.StatusInProgress, cdf.StatusSuccess, cdf.StatusFailure}
	for kind, byStatus := range counts {
		if !slices.Contains(kinds, kind) {
			kinds = append(kinds, kind)
		}
		for status := range byStatus {
			if !slices.Contains(statuses, status) {
				statuses = append(statuses, status)
			}
		}
	}
	for _, kind := range kinds {
		for _, status := range statuses {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[kind][status]), kind, status)
		}
	}
}

// printlnLogger adapts slog to promhttp's error log.
type printlnLogger struct{ log *slog.Logger }

func (l printlnLogger) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }
