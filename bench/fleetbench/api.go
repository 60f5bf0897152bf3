package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// apiClient is a minimal client of one replica's API.
type apiClient struct {
	base, token string
	http        *http.Client
}

func newAPIClient(base, token string) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	return &apiClient{base: base, token: token, http: &http.Client{Timeout: 2 * time.Minute, Transport: tr}}
}

// do sends a request with body as JSON and decodes a 2xx answer into out;
// any other status is an error carrying the body.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		if len(data) > 500 {
			data = data[:500]
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp, nil
}

// timedGet reads path and returns how long the full answer took; ok is
// false for anything but a 200 with a complete body.
func (c *apiClient) timedGet(ctx context.Context, path string) (time.Duration, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, false
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return time.Since(start), false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(start), err == nil && resp.StatusCode == http.StatusOK
}

// submitCores starts a Create task for cores and returns its id.
func (c *apiClient) submitCores(ctx context.Context, cores []cdf.NewCore) (string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/coreTasks", cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create", Cores: cores}, nil)
	if err != nil {
		return "", err
	}
	return resp.Header.Get("x-taskid"), nil
}

// coreTaskDone reads a core task: done when it ended and every item is
// final; failed counts items that did not end Success.
func (c *apiClient) coreTaskDone(ctx context.Context, id string) (done bool, failed int, err error) {
	var t cdf.CoreTask
	if _, err := c.do(ctx, http.MethodGet, "/coreTasks/"+id, nil, &t); err != nil {
		return false, 0, err
	}
	if t.TaskStatus != cdf.StatusSuccess && t.TaskStatus != cdf.StatusFailure {
		return false, 0, nil
	}
	for _, it := range t.Cores {
		switch it.TaskStatus {
		case cdf.StatusSuccess:
		case cdf.StatusFailure:
			failed++
		default:
			return false, 0, nil
		}
	}
	return true, failed, nil
}

// enrollmentToken makes a one-time enrollment token for core.
func (c *apiClient) enrollmentToken(ctx context.Context, core string) (string, error) {
	var tok struct {
		Token string `json:"token"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/cores/"+core+"/enrollmentTokens", map[string]any{}, &tok); err != nil {
		return "", err
	}
	return tok.Token, nil
}

// createTemplate creates a component template with one component.
func (c *apiClient) createTemplate(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodPost, "/templates", map[string]any{"name": name,
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}}, nil)
	return err
}

// deploy starts a deployment task of template to cores and returns its id.
func (c *apiClient) deploy(ctx context.Context, template string, cores []string) (string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/deploymentTasks", cdf.NewDeploymentTask{
		Template: cdf.NewDeploymentTemplate{Name: template}, Targets: cdf.DeploymentTargets{ThingNames: cores}}, nil)
	if err != nil {
		return "", err
	}
	return resp.Header.Get("x-taskid"), nil
}

// deploymentDone reads a deployment task: done when it ended and every one
// of want cores is final.
func (c *apiClient) deploymentDone(ctx context.Context, id string, want int) (done bool, status string, err error) {
	var t cdf.DeploymentTask
	if _, err := c.do(ctx, http.MethodGet, "/deploymentTasks/"+id, nil, &t); err != nil {
		return false, "", err
	}
	if t.TaskStatus != cdf.StatusSuccess && t.TaskStatus != cdf.StatusFailure {
		return false, t.TaskStatus, nil
	}
	if len(t.Deployments) < want {
		return false, t.TaskStatus, nil
	}
	for _, d := range t.Deployments {
		if d.TaskStatus != cdf.StatusSuccess && d.TaskStatus != cdf.StatusFailure {
			return false, t.TaskStatus, nil
		}
	}
	return true, t.TaskStatus, nil
}
