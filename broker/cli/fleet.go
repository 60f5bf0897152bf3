package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

func fleetCommands() []subcommand {
	return []subcommand{
		{name: "fleet summary", args: "", summary: "Show, per template version, how many cores want it, run it, and how their last deployment went",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					var s cdf.FleetSummary
					if err := c.api.Do(c.ctx, http.MethodGet, "/fleet/summary", nil, &s); err != nil {
						return fmt.Errorf("fleet summary: %w", err)
					}
					return emit(c, s, func(w io.Writer) { fleetTable(w, s) })
				}
			}},
		{name: "fleet cores", args: "[--status S] [--connectivity C] [--name-contains TEXT] [--template NAME [--version N]]",
			summary: "List cores with their health and connectivity, e.g. every offline or unhealthy core",
			setup: func(fs *pflag.FlagSet) runFunc {
				status := fs.String("status", "", "only cores with this status: HEALTHY, UNHEALTHY or UNKNOWN (no report yet)")
				conn := fs.String("connectivity", "", "only cores that are ONLINE or OFFLINE")
				name := fs.String("name-contains", "", "only cores whose name contains TEXT (any case)")
				tmpl := fs.String("template", "", "only cores whose desired template is NAME")
				version := fs.Int("version", 0, "with --template: only this template version")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					q := url.Values{}
					for k, v := range map[string]string{"status": strings.ToUpper(*status), "connectivity": strings.ToUpper(*conn),
						"nameContains": *name, "templateName": *tmpl} {
						if v != "" {
							q.Set(k, v)
						}
					}
					if *version > 0 {
						if *tmpl == "" {
							return usagef("--version needs --template")
						}
						q.Set("templateVersion", strconv.Itoa(*version))
					}
					q.Set("count", "1000")
					all := cdf.FleetCoreList{Cores: []cdf.FleetCore{}}
					err := pages(c, "/fleet/cores", q.Encode(), func(raw json.RawMessage) (int, error) {
						var l cdf.FleetCoreList
						err := json.Unmarshal(raw, &l)
						all.Cores = append(all.Cores, l.Cores...)
						all.Matching = l.Matching
						return len(l.Cores), err
					})
					if err != nil {
						return fmt.Errorf("list the fleet's cores: %w", err)
					}
					return emit(c, all, func(w io.Writer) { fleetCoreTable(w, all.Cores) })
				}
			}},
		{name: "events", args: "", summary: "Follow the broker's events, one line each, until Ctrl-C",
			setup: func(fs *pflag.FlagSet) runFunc {
				after := fs.String("after", "", "first replay the events after this event id")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					return followEvents(c, *after)
				}
			}},
	}
}

func fleetTable(w io.Writer, s cdf.FleetSummary) {
	var rows [][]string
	for _, name := range sortedKeys(s.Templates) {
		t := s.Templates[name]
		versions := make([]string, 0, len(t.Versions))
		for v := range t.Versions {
			versions = append(versions, v)
		}
		sort.Slice(versions, func(i, j int) bool {
			a, errA := strconv.Atoi(versions[i])
			b, errB := strconv.Atoi(versions[j])
			if errA != nil || errB != nil {
				return versions[i] < versions[j]
			}
			return a < b
		})
		for _, v := range versions {
			fv := t.Versions[v]
			latest := ""
			if v == strconv.Itoa(t.LatestVersion) {
				latest = "yes"
			}
			rows = append(rows, []string{name, v, latest, strconv.Itoa(fv.DesiredInUse), strconv.Itoa(fv.ReportedInUse),
				strconv.Itoa(fv.LastDeploymentSuccess), strconv.Itoa(fv.LastDeploymentFailed), strconv.Itoa(fv.LastDeploymentInProgress)})
		}
	}
	table(w, []string{"TEMPLATE", "VERSION", "LATEST", "DESIRED", "REPORTED", "SUCCESS", "FAILED", "IN PROGRESS"}, rows)
}

func fleetCoreTable(w io.Writer, cores []cdf.FleetCore) {
	var rows [][]string
	for _, c := range cores {
		t := c.Template
		rows = append(rows, []string{c.Name, c.Status, c.Connectivity, tsp(c.LastSeenAt), c.CoreVersion,
			templateRef(t.Desired.Name, t.Desired.Version), templateRef(t.Reported.Name, t.Reported.Version), t.Reported.DeploymentStatus})
	}
	table(w, []string{"NAME", "STATUS", "CONNECTIVITY", "LAST SEEN", "NUCLEUS", "DESIRED", "REPORTED", "DEPLOYMENT"}, rows)
}

// sortedKeys returns m's keys in order, for stable tables.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// eventEnvelope is the JSON envelope of one broker event.
type eventEnvelope struct {
	ID         string          `json:"id"`
	Source     string          `json:"source"`
	DetailType string          `json:"detail-type"`
	Time       string          `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

// followEvents streams GET /events and prints each event: one summary
// line, or with -o json the envelope on one line. Ctrl-C ends it cleanly.
func followEvents(c *cmdCtx, after string) error {
	path := "/events"
	if after != "" {
		path += "?lastEventId=" + url.QueryEscape(after)
	}
	// The stream is long-lived: no overall request timeout (Ctrl-C ends it).
	cfg := c.cfg
	cfg.HTTPClient = &http.Client{}
	api, err := apiclient.New(cfg)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := api.Do(c.ctx, http.MethodGet, path, nil, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	err = printEvents(c, pr)
	pr.Close()
	streamErr := <-done
	if c.ctx.Err() != nil {
		return nil // Ctrl-C: the user is done following
	}
	if streamErr != nil {
		return fmt.Errorf("follow events: %w", streamErr)
	}
	if err != nil {
		return err
	}
	return errors.New("the broker closed the event stream (it may be shutting down); run again with --after <last id> to resume")
}

// printEvents reads server-sent events and prints them until the stream ends.
func printEvents(c *cmdCtx, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case line == "" && data.Len() > 0:
			if err := printEvent(c, data.String()); err != nil {
				return err
			}
			data.Reset()
		}
	}
	if err := sc.Err(); err != nil && c.ctx.Err() == nil {
		return err
	}
	return nil
}

func printEvent(c *cmdCtx, data string) error {
	var ev eventEnvelope
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return fmt.Errorf("an event is not JSON: %w", err)
	}
	switch c.output {
	case "json":
		_, err := fmt.Fprintln(c.stdout, data)
		return err
	case "yaml":
		fmt.Fprintln(c.stdout, "---")
		return writeAs(c.stdout, "yaml", ev, nil)
	}
	_, err := fmt.Fprintf(c.stdout, "%s  %-6s  %-40s  %s\n", ev.Time, ev.ID, ev.DetailType, compact(ev.Detail))
	return err
}

// compact is the detail JSON on one line.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
