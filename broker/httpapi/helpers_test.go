package httpapi

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// tokenAuth accepts only the one bearer token it is.
type tokenAuth string

func (a tokenAuth) Authenticate(_ context.Context, token string) error {
	if token != string(a) {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

// doAPI sends method path to the server at baseURL with the bearer token,
// Accept: accept (when not empty) and body as CDF JSON (when not empty). It
// returns the status, the headers and the body as sent.
func doAPI(t *testing.T, baseURL, token, method, path, body, accept string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, baseURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if body != "" {
		req.Header.Set("Content-Type", cdf.MediaType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}
