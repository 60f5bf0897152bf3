package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// readDocument reads a YAML or JSON file (YAML is a superset of JSON) and
// returns it as a JSON object.
func readDocument(path string) (map[string]any, error) {
	if path == "" {
		return nil, usagef("-f FILE is required (a YAML or JSON file)")
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return parseDocument(path, b)
}

func parseDocument(path string, b []byte) (map[string]any, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s is neither valid YAML nor JSON: %w", path, err)
	}
	if doc == nil {
		return nil, fmt.Errorf("%s is empty: it must hold an object", path)
	}
	return doc, nil
}

func templateCommands() []subcommand {
	return []subcommand{
		{name: "templates create", args: "-f FILE", summary: "Create a component template from a YAML or JSON file (name, components)",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "YAML or JSON file with name and components (- for stdin)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments (the name is in the file)"); err != nil {
						return err
					}
					doc, err := readDocument(*file)
					if err != nil {
						return err
					}
					loc, err := c.api.Create(c.ctx, http.MethodPost, "/templates", doc)
					if err != nil {
						return fmt.Errorf("create template: %w", err)
					}
					var t cdf.Template
					if err := c.api.Do(c.ctx, http.MethodGet, loc, nil, &t); err != nil {
						return fmt.Errorf("read the created template: %w", err)
					}
					return emit(c, t, func(w io.Writer) { templateTable(w, []cdf.Template{t}) })
				}
			}},
		{name: "templates update", args: "NAME -f FILE", summary: "Make a new version of a component template from a YAML or JSON file",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "YAML or JSON file with the components (- for stdin)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the template NAME"); err != nil {
						return err
					}
					doc, err := readDocument(*file)
					if err != nil {
						return err
					}
					if n, ok := doc["name"].(string); ok && n != args[0] {
						return usagef("the file names template %q but the command names %q", n, args[0])
					}
					doc["name"] = args[0]
					loc, err := c.api.Create(c.ctx, http.MethodPut, "/templates/"+url.PathEscape(args[0]), doc)
					if err != nil {
						return fmt.Errorf("update template %q: %w", args[0], err)
					}
					var t cdf.Template
					if err := c.api.Do(c.ctx, http.MethodGet, loc, nil, &t); err != nil {
						return fmt.Errorf("read the updated template: %w", err)
					}
					return emit(c, t, func(w io.Writer) { templateTable(w, []cdf.Template{t}) })
				}
			}},
		{name: "templates list", args: "", summary: "List component templates (latest versions)",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					var all []cdf.Template
					err := pages(c, "/templates", "", func(raw json.RawMessage) (int, error) {
						var l cdf.TemplateList
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Templates...)
						return len(l.Templates), err
					})
					if err != nil {
						return fmt.Errorf("list templates: %w", err)
					}
					return emit(c, cdf.TemplateList{Templates: nonNil(all)}, func(w io.Writer) { templateTable(w, all) })
				}
			}},
		{name: "templates versions", args: "NAME", summary: "List every version of a component template",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the template NAME"); err != nil {
						return err
					}
					var all []cdf.Template
					err := pages(c, "/templates/"+url.PathEscape(args[0])+"/versions", "", func(raw json.RawMessage) (int, error) {
						var l cdf.TemplateList
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Templates...)
						return len(l.Templates), err
					})
					if err != nil {
						return fmt.Errorf("list versions of template %q: %w", args[0], err)
					}
					return emit(c, cdf.TemplateList{Templates: nonNil(all)}, func(w io.Writer) { templateTable(w, all) })
				}
			}},
		{name: "templates show", args: "NAME [--version N]", summary: "Show a component template (the latest version, or --version)",
			setup: func(fs *pflag.FlagSet) runFunc {
				version := fs.Int("version", 0, "show this version instead of the latest")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the template NAME"); err != nil {
						return err
					}
					path := "/templates/" + url.PathEscape(args[0])
					if *version > 0 {
						path += fmt.Sprintf("/versions/%d", *version)
					}
					var t cdf.Template
					if err := c.api.Do(c.ctx, http.MethodGet, path, nil, &t); err != nil {
						return fmt.Errorf("show template %q: %w", args[0], err)
					}
					return emit(c, t, func(w io.Writer) { templateDetail(w, t) })
				}
			}},
		{name: "templates delete", args: "NAME", summary: "Delete a component template and all its versions",
			setup: deleteByName("template", "the template NAME", "/templates/")},
		{name: "provisioning-templates list", args: "", summary: "List provisioning templates",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					var l struct {
						ProvisioningTemplates []struct {
							Name      string   `json:"name"`
							CreatedAt cdf.Time `json:"createdAt"`
							UpdatedAt cdf.Time `json:"updatedAt"`
						} `json:"provisioningTemplates"`
					}
					if err := c.api.Do(c.ctx, http.MethodGet, "/provisioningTemplates", nil, &l); err != nil {
						return fmt.Errorf("list provisioning templates: %w", err)
					}
					return emit(c, l, func(w io.Writer) {
						var rows [][]string
						for _, p := range l.ProvisioningTemplates {
							rows = append(rows, []string{p.Name, ts(p.CreatedAt), ts(p.UpdatedAt)})
						}
						table(w, []string{"NAME", "CREATED", "UPDATED"}, rows)
					})
				}
			}},
		{name: "provisioning-templates show", args: "NAME", summary: "Print a provisioning template document",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the provisioning template NAME"); err != nil {
						return err
					}
					var raw bytes.Buffer
					if err := c.api.Do(c.ctx, http.MethodGet, "/provisioningTemplates/"+url.PathEscape(args[0]), nil, &raw); err != nil {
						return fmt.Errorf("show provisioning template %q: %w", args[0], err)
					}
					var doc any
					if err := json.Unmarshal(raw.Bytes(), &doc); err != nil {
						return fmt.Errorf("show provisioning template %q: the broker's answer is not JSON: %w", args[0], err)
					}
					return emit(c, doc, func(w io.Writer) { _ = writeAs(w, "json", doc, nil) })
				}
			}},
		{name: "provisioning-templates put", args: "NAME -f FILE", summary: "Create or replace a provisioning template from a JSON or YAML file",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "JSON or YAML file with the template document (- for stdin)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the provisioning template NAME"); err != nil {
						return err
					}
					doc, err := readDocument(*file)
					if err != nil {
						return err
					}
					if err := c.api.Do(c.ctx, http.MethodPut, "/provisioningTemplates/"+url.PathEscape(args[0]), doc, nil); err != nil {
						return fmt.Errorf("put provisioning template %q: %w", args[0], err)
					}
					return emit(c, map[string]string{"saved": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "saved provisioning template %s\n", args[0]) })
				}
			}},
		{name: "cas list", args: "", summary: "List the broker's certificate authorities",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					var l struct {
						CertificateAuthorities []struct {
							CAID           string   `json:"caId"`
							Subject        string   `json:"subject"`
							NotAfter       cdf.Time `json:"notAfter"`
							Default        bool     `json:"default"`
							KeyAlgorithm   string   `json:"keyAlgorithm"`
							CertificatePem string   `json:"certificatePem"`
						} `json:"certificateAuthorities"`
					}
					if err := c.api.Do(c.ctx, http.MethodGet, "/certificateAuthorities", nil, &l); err != nil {
						return fmt.Errorf("list certificate authorities: %w", err)
					}
					return emit(c, l, func(w io.Writer) {
						var rows [][]string
						for _, a := range l.CertificateAuthorities {
							def := ""
							if a.Default {
								def = "yes"
							}
							rows = append(rows, []string{a.CAID, a.Subject, a.KeyAlgorithm, ts(a.NotAfter), def})
						}
						table(w, []string{"CA ID (SHA-256)", "SUBJECT", "KEY", "NOT AFTER", "DEFAULT"}, rows)
					})
				}
			}},
	}
}

func templateTable(w io.Writer, ts_ []cdf.Template) {
	var rows [][]string
	for _, t := range ts_ {
		rows = append(rows, []string{t.Name, itoa(t.Version), ts(t.CreatedAt), ts(t.UpdatedAt)})
	}
	table(w, []string{"NAME", "VERSION", "CREATED", "UPDATED"}, rows)
}

func templateDetail(w io.Writer, t cdf.Template) {
	fields(w, [][2]string{{"Name", t.Name}, {"Version", itoa(t.Version)}, {"Created", ts(t.CreatedAt)}, {"Updated", ts(t.UpdatedAt)}})
	fmt.Fprintln(w)
	var rows [][]string
	for _, c := range t.Components {
		var merge, user string
		if c.ConfigurationUpdate != nil {
			merge = c.ConfigurationUpdate.Merge
		}
		if c.RunWith != nil {
			user = c.RunWith.PosixUser
		}
		rows = append(rows, []string{c.Key, c.Version, user, merge})
	}
	table(w, []string{"COMPONENT", "VERSION", "RUN AS", "CONFIG MERGE"}, rows)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// pages calls a paginated list endpoint until the broker reports no more
// pages; decode returns how many items a page held. The cursor parameter
// is the one the broker names in pagination.lastEvaluated.
func pages(c *cmdCtx, path, extraQuery string, decode func(json.RawMessage) (int, error)) error {
	q := url.Values{}
	if extraQuery != "" {
		parsed, err := url.ParseQuery(extraQuery)
		if err != nil {
			return err
		}
		q = parsed
	}
	for range 10000 {
		var raw json.RawMessage
		target := path
		if enc := q.Encode(); enc != "" {
			target += "?" + enc
		}
		if err := c.api.Do(c.ctx, http.MethodGet, target, nil, &raw); err != nil {
			return err
		}
		n, err := decode(raw)
		if err != nil {
			return fmt.Errorf("decode %s: %w", path, err)
		}
		var p struct {
			Pagination *cdf.Pagination `json:"pagination"`
		}
		_ = json.Unmarshal(raw, &p)
		if n == 0 || p.Pagination == nil || len(p.Pagination.LastEvaluated) == 0 {
			return nil
		}
		next := false
		for k, v := range p.Pagination.LastEvaluated {
			if v == nil {
				continue
			}
			val := fmt.Sprint(v)
			if f, ok := v.(float64); ok {
				val = strconv.FormatFloat(f, 'f', -1, 64)
			}
			q.Set(cursorParam(k), val)
			next = true
		}
		if !next {
			return nil
		}
	}
	return fmt.Errorf("list %s: too many pages", path)
}

// cursorParam maps a lastEvaluated key ("thingName") to the query
// parameter that continues after it ("exclusiveStartThingName").
func cursorParam(key string) string {
	if key == "" {
		return key
	}
	if key == "nextToken" { // patch lists
		return "exclusiveStartToken"
	}
	return "exclusiveStart" + strings.ToUpper(key[:1]) + key[1:]
}
