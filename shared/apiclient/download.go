package apiclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Download GETs path without the token (downloads are open) and streams
// the body to w, however large; it returns the response headers so the
// caller can check X-Checksum-Sha256. A 4xx/5xx answer is an *APIError.
func (c *Client) Download(ctx context.Context, path string, w io.Writer) (http.Header, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("GET %s: %w", path, ctxErr)
		}
		return nil, fmt.Errorf("cannot reach the broker at %s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, apiError(resp.StatusCode, resp.Body)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return resp.Header, fmt.Errorf("GET %s: read response: %w", path, err)
	}
	return resp.Header, nil
}
