package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// apiClient calls one replica's API: shared/apiclient for the calls, and
// a plain request for timedGet, which times the whole answer.
type apiClient struct {
	api         *apiclient.Client
	base, token string
	http        *http.Client
}

func newAPIClient(base, token string) (*apiClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: tr}
	api, err := apiclient.New(apiclient.Config{BaseURL: base, Token: token, HTTPClient: hc, UserAgent: "fleetbench"})
	if err != nil {
		return nil, err
	}
	return &apiClient{api: api, base: base, token: token, http: hc}, nil
}

// create POSTs body to path and returns the id the broker's Location ends in.
func (c *apiClient) create(ctx context.Context, path string, body any) (string, error) {
	loc, err := c.api.Create(ctx, http.MethodPost, path, body)
	if err != nil {
		return "", err
	}
	return loc[strings.LastIndex(loc, "/")+1:], nil
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
	return c.create(ctx, "/coreTasks", cdf.NewCoreTask{CoreVersion: "2.12.0", Type: "Create", Cores: cores})
}

// endedCoreTasks lists the core tasks that have ended (Success or
// Failure) and when each did, by the broker's clock.
func (c *apiClient) endedCoreTasks(ctx context.Context) (map[string]time.Time, error) {
	ended := map[string]time.Time{}
	after := ""
	for {
		path := "/coreTasks?count=1000"
		if after != "" {
			path += "&exclusiveStartTaskId=" + url.QueryEscape(after)
		}
		var list cdf.CoreTaskList
		if err := c.api.Do(ctx, http.MethodGet, path, nil, &list); err != nil {
			return nil, err
		}
		for _, t := range list.Tasks {
			if t.TaskStatus == cdf.StatusSuccess || t.TaskStatus == cdf.StatusFailure {
				ended[t.ID] = t.UpdatedAt.Time
			}
		}
		if list.Pagination == nil || list.Pagination.LastEvaluated == nil || len(list.Tasks) == 0 {
			return ended, nil
		}
		after = list.Tasks[len(list.Tasks)-1].ID
	}
}

// coreTaskDone reads a core task: done when it ended and every item is
// final; failed counts items that did not end Success.
func (c *apiClient) coreTaskDone(ctx context.Context, id string) (done bool, failed int, err error) {
	var t cdf.CoreTask
	if err := c.api.Do(ctx, http.MethodGet, "/coreTasks/"+id, nil, &t); err != nil {
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
	if err := c.api.Do(ctx, http.MethodPost, "/cores/"+core+"/enrollmentTokens", map[string]any{}, &tok); err != nil {
		return "", err
	}
	return tok.Token, nil
}

// createTemplate creates a component template with one component.
func (c *apiClient) createTemplate(ctx context.Context, name string) error {
	return c.api.Do(ctx, http.MethodPost, "/templates", map[string]any{"name": name,
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}}, nil)
}

// deploy starts a deployment task of template to cores and returns its id.
func (c *apiClient) deploy(ctx context.Context, template string, cores []string) (string, error) {
	return c.create(ctx, "/deploymentTasks", cdf.NewDeploymentTask{
		Template: cdf.NewDeploymentTemplate{Name: template}, Targets: cdf.DeploymentTargets{ThingNames: cores}})
}

// deploymentDone reads a deployment task: done when it ended and every one
// of want cores is final.
func (c *apiClient) deploymentDone(ctx context.Context, id string, want int) (done bool, status string, err error) {
	var t cdf.DeploymentTask
	if err := c.api.Do(ctx, http.MethodGet, "/deploymentTasks/"+id, nil, &t); err != nil {
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

// metric reads one sample of GET /metrics (the series exactly as written,
// labels included); a series not exposed yet reads 0.
func (c *apiClient) metric(ctx context.Context, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s/metrics: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read %s/metrics: status %d, %v", c.base, resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}
