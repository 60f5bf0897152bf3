// Package assetlibrary is a client of the CDF Asset Library REST API, just
// wide enough to expand deployment targets (spec §5.2): the things of
// Asset Library devices, of the devices in Asset Library groups, and of the
// results of an Asset Library search. It retries the Asset Library's
// transient failures (5xx, 429, network errors) with a bounded backoff, and
// reports what the Asset Library rejected as errkind.Invalid with its message,
// so a deployment task can fail with a reason the operator can act on.
package assetlibrary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// MediaType is the Asset Library 2.0 media type the client asks for. The
// Asset Library answers 415 unless Accept is exactly one of its versions.
const MediaType = "application/vnd.aws-cdf-v2.0+json"

// Defaults of Config.
const (
	DefaultPageSize     = 100
	DefaultRetries      = 3
	DefaultRetryWaitMin = 500 * time.Millisecond
	DefaultRetryWaitMax = 10 * time.Second
	// maxPages bounds every paginated listing, so an Asset Library that
	// ignores offset cannot keep a task busy forever.
	maxPages = 10000
	// maxErrorText bounds the part of an error body shown in messages.
	maxErrorText = 300
)

// Config configures a Client.
type Config struct {
	// BaseURL is the Asset Library's root, "https://xyz.execute-api.us-east-1.amazonaws.com/Prod".
	BaseURL string
	// Headers are sent on every request (an API key, an Authorization
	// header, or Accept to choose another media type).
	Headers map[string]string
	// Region is the AWS region of the broker: things whose ARN names another
	// region are dropped (spec §5.2). Empty keeps every region.
	Region string
	// HTTPClient sends the requests; nil uses a pooled client with a 30 s timeout.
	HTTPClient *http.Client
	// Logger receives retry and skip notices; nil discards them.
	Logger *slog.Logger
	// PageSize is the count asked for per page of a listing; 0 means DefaultPageSize.
	PageSize int
	// Retries is how often a request is retried after a transient failure;
	// 0 means DefaultRetries, a negative value disables retries.
	Retries int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// retries (a Retry-After header on 429/503 is honoured within them);
	// 0 means DefaultRetryWaitMin / DefaultRetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
}

// Client reads devices, group members and search results from an Asset Library.
type Client struct {
	base     *url.URL
	headers  map[string]string
	region   string
	log      *slog.Logger
	pageSize int
	http     *retryablehttp.Client
}

// New checks cfg and returns a client. It makes no request.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || base.Host == "" || base.RawQuery != "" || base.Fragment != "" || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, errkind.New(errkind.Invalid, "asset library base URL %q is not valid: use http(s)://host[:port][/path]", cfg.BaseURL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = DefaultRetryWaitMin
	}
	if cfg.RetryWaitMax <= 0 {
		cfg.RetryWaitMax = DefaultRetryWaitMax
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		cfg.RetryWaitMax = cfg.RetryWaitMin
	}
	rc := retryablehttp.NewClient()
	if cfg.HTTPClient != nil {
		rc.HTTPClient = cfg.HTTPClient
	} else {
		rc.HTTPClient.Timeout = 30 * time.Second
	}
	rc.Logger = cfg.Logger
	rc.RetryMax = cfg.Retries
	rc.RetryWaitMin = cfg.RetryWaitMin
	rc.RetryWaitMax = cfg.RetryWaitMax
	// Hand back the last response after the final attempt, so its status and
	// message reach the caller.
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	headers := make(map[string]string, len(cfg.Headers))
	for k, v := range cfg.Headers {
		headers[k] = v
	}
	return &Client{base: base, headers: headers, region: cfg.Region, log: cfg.Logger, pageSize: cfg.PageSize, http: rc}, nil
}

// device is the part of an Asset Library device resource the client reads.
type device struct {
	DeviceID       string `json:"deviceId"`
	Category       string `json:"category"`
	AwsIotThingArn string `json:"awsIotThingArn"`
}

// resource is a device or a group, as search returns them.
type resource struct {
	device
	GroupPath string `json:"groupPath"`
}

// isGroup tells groups from devices in search results: by category, else by
// which identifier is present.
func (r resource) isGroup() bool {
	if r.Category != "" {
		return r.Category == "group"
	}
	return r.DeviceID == "" && r.GroupPath != ""
}

// list is the Asset Library's list response.
type list[T any] struct {
	Results []T `json:"results"`
}

// DeviceThings returns the thing names of the Asset Library devices ids
// (GET /bulkdevices), in the order given, without duplicates. Devices
// without an awsIotThingArn, unknown devices and things of other regions are
// skipped.
func (c *Client) DeviceThings(ctx context.Context, ids []string) ([]string, error) {
	var out things
	for start := 0; start < len(ids); start += c.pageSize {
		chunk := ids[start:min(start+c.pageSize, len(ids))]
		for _, id := range chunk {
			if id == "" || strings.Contains(id, ",") {
				return nil, errkind.New(errkind.Invalid, "asset library device id %q is not valid: it must be non-empty and have no comma", id)
			}
		}
		q := url.Values{"deviceIds": {strings.Join(chunk, ",")}, "includeGroups": {"false"}}
		var page list[device]
		if err := c.get(ctx, "/bulkdevices", q, &page); err != nil {
			return nil, fmt.Errorf("get asset library devices: %w", err)
		}
		byID := make(map[string]device, len(page.Results))
		for _, d := range page.Results {
			byID[d.DeviceID] = d
		}
		// Keep the caller's order, whatever order the Asset Library answers in.
		for _, id := range chunk {
			d, ok := byID[id]
			if !ok {
				c.log.Warn("asset library device not found, skipped", "deviceId", id)
				continue
			}
			c.addThing(&out, d)
		}
	}
	return out.names, nil
}

// GroupThings returns the thing names of the devices that are direct
// members of the Asset Library groups paths
// (GET /groups/{groupPath}/members/devices, paged by offset and count), in
// order, without duplicates.
func (c *Client) GroupThings(ctx context.Context, paths []string) ([]string, error) {
	var out things
	for _, p := range paths {
		if err := c.groupThings(ctx, p, &out); err != nil {
			return nil, err
		}
	}
	return out.names, nil
}

func (c *Client) groupThings(ctx context.Context, groupPath string, out *things) error {
	if !strings.HasPrefix(groupPath, "/") {
		return errkind.New(errkind.Invalid, "asset library group path %q is not valid: it starts with /", groupPath)
	}
	path := "/groups/" + encodeURIComponent(groupPath) + "/members/devices"
	err := c.pages(ctx, path, nil, func(raw []json.RawMessage) error {
		for _, r := range raw {
			var d device
			if err := json.Unmarshal(r, &d); err != nil {
				return fmt.Errorf("decode device: %w", err)
			}
			c.addThing(out, d)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list the devices of asset library group %q: %w", groupPath, err)
	}
	return nil
}

// QueryThings runs an Asset Library search (GET /search, paged) given as
// the SearchRequest object of a deployment task's targets.assetLibraryQuery.
// Devices found contribute their thing; groups found contribute the things
// of their member devices. The result is in order, without duplicates.
func (c *Client) QueryThings(ctx context.Context, query json.RawMessage) ([]string, error) {
	sr, err := ParseQuery(query)
	if err != nil {
		return nil, err
	}
	q, err := sr.queryString()
	if err != nil {
		return nil, err
	}
	var out things
	var groups []string
	err = c.pages(ctx, "/search", q, func(raw []json.RawMessage) error {
		for _, r := range raw {
			var res resource
			if err := json.Unmarshal(r, &res); err != nil {
				return fmt.Errorf("decode search result: %w", err)
			}
			if res.isGroup() {
				groups = append(groups, res.GroupPath)
				continue
			}
			c.addThing(&out, res.device)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("search the asset library: %w", err)
	}
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if g == "" || seen[g] {
			continue
		}
		seen[g] = true
		if err := c.groupThings(ctx, g, &out); err != nil {
			return nil, fmt.Errorf("search the asset library: %w", err)
		}
	}
	return out.names, nil
}

// things collects thing names in order, once each.
type things struct {
	names []string
	seen  map[string]bool
}

func (t *things) add(name string) {
	if t.seen == nil {
		t.seen = map[string]bool{}
	}
	if !t.seen[name] {
		t.seen[name] = true
		t.names = append(t.names, name)
	}
}

// addThing adds the thing of a device, unless it has none or it is in
// another region.
func (c *Client) addThing(out *things, d device) {
	if d.AwsIotThingArn == "" {
		c.log.Debug("asset library device has no thing, skipped", "deviceId", d.DeviceID)
		return
	}
	name, region, ok := ParseThingArn(d.AwsIotThingArn)
	if !ok {
		c.log.Warn("asset library device has an awsIotThingArn that is not a thing ARN, skipped", "deviceId", d.DeviceID, "awsIotThingArn", d.AwsIotThingArn)
		return
	}
	if c.region != "" && region != c.region {
		c.log.Info("asset library device's thing is in another region, skipped", "deviceId", d.DeviceID, "awsIotThingArn", d.AwsIotThingArn, "region", c.region)
		return
	}
	out.add(name)
}

// ParseThingArn splits "arn:aws:iot:<region>:<account>:thing/<name>" into
// the thing name and region.
func ParseThingArn(arn string) (name, region string, ok bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iot" {
		return "", "", false
	}
	name, found := strings.CutPrefix(parts[5], "thing/")
	if !found || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return name, parts[3], true
}

// pages gets path with q plus offset and count until a page is shorter than
// the page size, handing each page's results to each.
func (c *Client) pages(ctx context.Context, path string, q url.Values, each func([]json.RawMessage) error) error {
	offset := 0
	for range maxPages {
		pq := url.Values{}
		for k, v := range q {
			pq[k] = v
		}
		pq.Set("offset", strconv.Itoa(offset))
		pq.Set("count", strconv.Itoa(c.pageSize))
		var page list[json.RawMessage]
		if err := c.get(ctx, path, pq, &page); err != nil {
			return err
		}
		if err := each(page.Results); err != nil {
			return err
		}
		if len(page.Results) < c.pageSize {
			return nil
		}
		offset += len(page.Results)
	}
	return fmt.Errorf("GET %s: more than %d pages of %d; giving up", path, maxPages, c.pageSize)
}

// get sends GET path?q and decodes a 2xx JSON body into v.
func (c *Client) get(ctx context.Context, path string, q url.Values, v any) error {
	// path is already escaped (a group path is one escaped segment).
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("build request GET %s: %w", path, err)
	}
	req.Header.Set("Accept", MediaType)
	for k, val := range c.headers {
		req.Header.Set(k, val)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("GET %s: %w", path, ctx.Err())
		}
		return errkind.Wrap(errkind.Unavailable, err, "the asset library at %s cannot be reached", c.base.Redacted())
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return errkind.Wrap(errkind.Unavailable, err, "read the asset library's answer to GET %s", path)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if err := json.Unmarshal(body, v); err != nil {
			return fmt.Errorf("decode the asset library's answer to GET %s: %w", path, err)
		}
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
		return errkind.New(errkind.Invalid, "the asset library rejected GET %s (%s): %s", path, resp.Status, errorText(body))
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return errkind.New(errkind.Unavailable, "the asset library failed GET %s (%s) after %d retries: %s", path, resp.Status, c.http.RetryMax, errorText(body))
	}
	return fmt.Errorf("GET %s: unexpected status %s", path, resp.Status)
}

// errorText extracts the message of an Asset Library error body: its
// "error" or "message" field, else the (bounded) text.
func errorText(body []byte) string {
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Error != "" {
			return e.Error
		}
		if e.Message != "" {
			return e.Message
		}
	}
	s := strings.TrimSpace(string(body))
	if s == "" {
		return "no message"
	}
	if len(s) > maxErrorText {
		s = s[:maxErrorText] + "…"
	}
	return s
}

// encodeURIComponent escapes s as JavaScript's encodeURIComponent does:
// everything but A-Z a-z 0-9 - _ . ! ~ * ' ( ). The Asset Library decodes
// path segments and filter values with its counterpart.
func encodeURIComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
