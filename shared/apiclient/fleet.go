package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Create sends body as JSON with the bearer token and returns the
// Location header of the answer: the path of the created resource, as
// the broker answers POST /coreTasks, /deploymentTasks, /templates and
// /cores/{name}/deviceTasks (202 or 201 with an empty body). A 4xx/5xx
// answer is an *APIError; a 2xx answer without Location is an error.
func (c *Client) Create(ctx context.Context, method, path string, body any) (string, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("%s %s: encode request: %w", method, path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", fmt.Errorf("%s %s: %w", method, path, ctxErr)
		}
		return "", fmt.Errorf("cannot reach the broker at %s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", apiError(resp.StatusCode, lr)
	}
	_, _ = io.Copy(io.Discard, lr)
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%s %s: the broker's answer has no Location header (is %s a ggfleet broker?)", method, path, c.base)
	}
	return loc, nil
}
