package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"gopkg.in/yaml.v3"
)

// emit writes v as JSON or YAML for scripts, or calls table for people.
// YAML keeps the JSON field names (it is made from the JSON).
func emit(c *cmdCtx, v any, table func(w io.Writer)) error {
	return writeAs(c.stdout, c.output, v, table)
}

func writeAs(w io.Writer, format string, v any, table func(w io.Writer)) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		y, err := yaml.Marshal(generic)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	table(w)
	return nil
}

// table writes aligned columns: header first, then rows; empty cells are "-".
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "-"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
}

// fields writes "Key:  value" lines, aligned.
func fields(w io.Writer, kv [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, p := range kv {
		v := p[1]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], v)
	}
	_ = tw.Flush()
}

// ts formats a CDF timestamp for tables ("" when unset).
func ts(t cdf.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// tsp is ts for optional timestamps.
func tsp(t *cdf.Time) string {
	if t == nil {
		return ""
	}
	return ts(*t)
}

// itoa formats a version number, "" for 0 (none).
func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}
