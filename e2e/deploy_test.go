package e2e

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// eventLog collects events from the SSE stream and from a webhook.
type eventLog struct {
	mu      sync.Mutex
	sse     []map[string]any
	hook    []map[string]any
	badSigs int
}

func (l *eventLog) types(fromHook bool) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.sse
	if fromHook {
		src = l.hook
	}
	out := map[string]int{}
	for _, e := range src {
		out[fmt.Sprint(e["detail-type"])]++
	}
	return out
}

// webhook starts a receiver that checks X-Ggfleet-Signature.
func (l *eventLog) webhook(t *testing.T, secret string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Ggfleet-Timestamp")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		l.mu.Lock()
		defer l.mu.Unlock()
		if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Ggfleet-Signature"))) || r.Header.Get("X-Ggfleet-Event-Id") == "" {
			l.badSigs++
			w.WriteHeader(400)
			return
		}
		var e map[string]any
		_ = json.Unmarshal(body, &e)
		l.hook = append(l.hook, e)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// follow reads GET /events until the test ends.
func (l *eventLog) follow(t *testing.T, b *broker) {
	req, _ := http.NewRequest("GET", b.url+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var e map[string]any
				if json.Unmarshal([]byte(data), &e) == nil {
					l.mu.Lock()
					l.sse = append(l.sse, e)
					l.mu.Unlock()
				}
			}
		}
	}()
}

func fleetVersion(t *testing.T, b *broker, name, version string) map[string]any {
	t.Helper()
	var fs struct {
		Templates map[string]struct {
			LatestVersion int                       `json:"latestVersion"`
			Versions      map[string]map[string]any `json:"versions"`
		} `json:"templates"`
	}
	b.must(200, "GET", "/fleet/summary", nil).JSON(t, &fs)
	tmpl, ok := fs.Templates[name]
	if !ok {
		t.Fatalf("fleet summary has no template %s: %+v", name, fs)
	}
	v := tmpl.Versions[version]
	v["latestVersion"] = float64(tmpl.LatestVersion)
	return v
}

func wantCounts(t *testing.T, got map[string]any, desired, success, failed int) {
	t.Helper()
	if got["desiredInUse"] != float64(desired) || got["lastDeploymentSuccess"] != float64(success) || got["lastDeploymentFailed"] != float64(failed) {
		t.Fatalf("fleet counts = %v, want desiredInUse %d, success %d, failed %d", got, desired, success, failed)
	}
}

// TestDeploymentJourney is the CDF journey over the embedded MQTT broker: an
// MQTT client holding the enrolled core's certificate plays the agent.
func TestDeploymentJourney(t *testing.T) {
	secret := "a-webhook-secret-of-32-characters!"
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var events eventLog
	hook := events.webhook(t, secret)
	b := startBroker(t, "--webhook", hook.URL, "--webhook-secret-file", secretFile)
	events.follow(t, b)

	b.must(201, "POST", "/templates", map[string]any{"name": "IntegrationTest",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	id := b.createCores(core("core1"), core("core2"))
	if task := b.waitTask("/coreTasks/"+id, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("core task = %v", task)
	}

	// core1 enrolls and connects; core2 never does.
	dev := b.enrollDevice("core1")
	agent, err := dev.connect(t, "core1")
	if err != nil {
		t.Fatal(err)
	}
	agent.subscribeDeployments(func(map[string]any) (string, string, string) { return "SUCCEEDED", "SUCCESSFUL", "" })
	agent.heartbeat(30, "aws.greengrass.Cli", "2.4.0")
	waitFor(t, 30*time.Second, "core1 HEALTHY and ONLINE", func() bool {
		var c map[string]any
		b.must(200, "GET", "/cores/core1", nil).JSON(t, &c)
		d := c["device"].(map[string]any)
		return d["status"] == "HEALTHY" && d["connectivity"] == "ONLINE" && d["lastSeenAt"] != nil
	})

	// Deploy v1 to both: core1 Success, core2 Failure, task Failure.
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "IntegrationTest"},
		"targets": map[string]any{"thingNames": []string{"core1", "core2"}}})
	task := b.waitTask("/deploymentTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	if task["taskStatus"] != "Failure" {
		t.Fatalf("deployment task v1 = %v", task)
	}
	items := task["deployments"].([]any)
	if len(items) != 2 {
		t.Fatalf("deployments = %v", items)
	}
	for _, it := range items {
		item := it.(map[string]any)
		switch item["coreName"] {
		case "core1":
			if item["taskStatus"] != "Success" {
				t.Fatalf("core1 item = %v", item)
			}
		case "core2":
			if item["taskStatus"] != "Failure" || item["statusMessage"] != "Core device not registered with Greengrass V2" {
				t.Fatalf("core2 item = %v", item)
			}
		}
	}
	if fmt.Sprint(task["targets"].(map[string]any)["thingNames"]) != "[core1 core2]" {
		t.Fatalf("targets = %v", task["targets"])
	}
	var th thingView
	b.must(200, "GET", "/registry/things/core1", nil).JSON(t, &th)
	if !contains(th.ThingGroups, "cdf_ggv2_deploymentForTemplate_IntegrationTest_1") {
		t.Fatalf("core1 groups = %v", th.ThingGroups)
	}
	v1 := fleetVersion(t, b, "IntegrationTest", "1")
	wantCounts(t, v1, 2, 1, 1)
	var failed struct {
		Cores []map[string]any `json:"cores"`
	}
	b.must(200, "GET", "/cores?failedOnly=true", nil).JSON(t, &failed)
	if len(failed.Cores) != 1 || failed.Cores[0]["name"] != "core2" {
		t.Fatalf("failedOnly = %v", failed.Cores)
	}

	// Deploy v2 to core1: group moves, task Success, fleet 1/1/0.
	b.must(204, "PUT", "/templates/IntegrationTest", map[string]any{"components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"}, {"key": "aws.greengrass.clientdevices.IPDetector", "version": "2.1.1"}}})
	r = b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "IntegrationTest", "version": "2"},
		"targets": map[string]any{"thingNames": []string{"core1"}}})
	if task := b.waitTask("/deploymentTasks/"+r.Header.Get("x-taskid"), 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment task v2 = %v", task)
	}
	b.must(200, "GET", "/registry/things/core1", nil).JSON(t, &th)
	if !contains(th.ThingGroups, "cdf_ggv2_deploymentForTemplate_IntegrationTest_2") || contains(th.ThingGroups, "cdf_ggv2_deploymentForTemplate_IntegrationTest_1") {
		t.Fatalf("core1 groups after v2 = %v", th.ThingGroups)
	}
	v2 := fleetVersion(t, b, "IntegrationTest", "2")
	wantCounts(t, v2, 1, 1, 0)
	if v2["latestVersion"] != float64(2) {
		t.Fatalf("latestVersion = %v", v2["latestVersion"])
	}
	var c map[string]any
	b.must(200, "GET", "/cores/core1", nil).JSON(t, &c)
	if rep := c["template"].(map[string]any)["reported"].(map[string]any); rep["version"] != float64(2) {
		t.Fatalf("reported template = %v", rep)
	}
	var deps struct {
		Deployments []map[string]any `json:"deployments"`
	}
	b.must(200, "GET", "/cores/core1/deployments", nil).JSON(t, &deps)
	if len(deps.Deployments) != 2 || deps.Deployments[0]["taskId"] == nil {
		t.Fatalf("core1 deployments = %v", deps.Deployments)
	}

	// Client devices and a core delete produce the remaining event types.
	r = b.must(202, "POST", "/cores/core1/deviceTasks", map[string]any{"type": "Create", "devices": []map[string]any{
		{"name": "dev-1", "provisioningTemplate": "ggfleet-client-device", "provisioningParameters": map[string]string{"ThingName": "dev-1"}}}})
	b.waitTask("/deviceTasks/"+r.Header.Get("x-taskid"), time.Minute)
	r = b.must(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Delete",
		"options": map[string]any{"deprovisionCores": true, "deprovisionClientDevices": true},
		"cores":   []map[string]any{{"name": "core1", "provisioningTemplate": "UNUSED"}}})
	b.waitTask("/coreTasks/"+r.Header.Get("x-taskid"), time.Minute)

	all := []string{"Core Created Event", "Core Deleted Event", "Core Template Updated Event", "Device Created Event", "Device Deleted Event", "DeploymentTask Created Event"}
	for _, fromHook := range []bool{false, true} {
		waitFor(t, time.Minute, fmt.Sprintf("every event type (webhook %v)", fromHook), func() bool {
			got := events.types(fromHook)
			for _, ty := range all {
				if got[ty] == 0 {
					return false
				}
			}
			return true
		})
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if events.badSigs != 0 {
		t.Fatalf("%d webhook deliveries had a bad signature", events.badSigs)
	}
	for _, e := range events.sse {
		if e["source"] != "com.aws.cdf.greengrass2-provisioning" || e["id"] == nil || e["time"] == nil || e["detail"] == nil {
			t.Fatalf("envelope = %v", e)
		}
	}
	// The deleted core's certificate can no longer connect.
	if _, err := dev.connect(t, "core1"); err == nil {
		t.Fatal("a deleted core's certificate could still connect")
	}
}

// TestDeviceTopicsAreIsolated: a device certificate cannot use another
// thing's topics, nor a client id that is not its own name.
func TestDeviceTopicsAreIsolated(t *testing.T) {
	b := startBroker(t)
	id := b.createCores(core("core-a"), core("core-b"))
	b.waitTask("/coreTasks/"+id, 2*time.Minute)
	devA := b.enrollDevice("core-a")
	devB := b.enrollDevice("core-b")
	if _, err := devA.connect(t, "core-b"); err == nil {
		t.Fatal("core-a's certificate connected with client id core-b")
	}
	a, err := devA.connect(t, "core-a")
	if err != nil {
		t.Fatal(err)
	}
	bb, err := devB.connect(t, "core-b")
	if err != nil {
		t.Fatal(err)
	}
	// core-b listens on its own health topic.
	leakedCount := 0
	var mu sync.Mutex
	if tok := bb.client.Subscribe(topic("core-b", "health"), 1, func(_ mqtt.Client, _ mqtt.Message) {
		mu.Lock()
		leakedCount++
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("core-b subscribing to its own topic: %v", tok.Error())
	}
	for _, filter := range []string{topic("core-b", "deployments"), "ggfleet/things/+/health", "#", "$SYS/#"} {
		tok := a.client.Subscribe(filter, 1, nil)
		tok.WaitTimeout(10 * time.Second)
		st, ok := tok.(*mqtt.SubscribeToken)
		if !ok || st.Result()[filter] != 0x80 {
			t.Errorf("core-a subscribing to %q was not refused (result %v, err %v)", filter, st.Result(), tok.Error())
		}
	}
	// A publish on core-b's health from core-a reaches neither core-b nor the broker's view of core-b.
	pub := a.client.Publish(topic("core-b", "health"), 1, false, `{"version":1,"status":"UNHEALTHY","intervalSeconds":30}`)
	pub.WaitTimeout(10 * time.Second)
	// core-b's own report is the fence: once it is visible, core-a's earlier publish would be too.
	bb.heartbeat(30)
	waitFor(t, 30*time.Second, "core-b's own report", func() bool {
		var c map[string]any
		b.must(200, "GET", "/cores/core-b", nil).JSON(t, &c)
		return c["device"].(map[string]any)["status"] == "HEALTHY"
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return leakedCount
	}
	// Delivery to core-b's own subscription may trail the broker's view.
	waitFor(t, 30*time.Second, "core-b's own report on its subscription", func() bool { return count() >= 1 })
	if n := count(); n != 1 {
		t.Fatalf("core-b received %d health messages, want only its own", n)
	}
}

// TestSilentCoreGoesOffline: a core that stops heartbeating turns OFFLINE
// after three missed intervals, and ONLINE again when it reports.
func TestSilentCoreGoesOffline(t *testing.T) {
	b := startBroker(t)
	id := b.createCores(core("core-s"))
	b.waitTask("/coreTasks/"+id, 2*time.Minute)
	agent, err := b.enrollDevice("core-s").connect(t, "core-s")
	if err != nil {
		t.Fatal(err)
	}
	agent.heartbeat(1)
	connectivity := func() any {
		var c map[string]any
		b.must(200, "GET", "/cores/core-s", nil).JSON(t, &c)
		return c["device"].(map[string]any)["connectivity"]
	}
	waitFor(t, 30*time.Second, "ONLINE", func() bool { return connectivity() == "ONLINE" })
	waitFor(t, 30*time.Second, "OFFLINE after missed heartbeats", func() bool { return connectivity() == "OFFLINE" })
	agent.heartbeat(1)
	waitFor(t, 30*time.Second, "ONLINE again", func() bool { return connectivity() == "ONLINE" })
}

// TestDeploymentTimeoutAndRepublish: a registered core that never answers
// fails at the deadline; the desired document is re-published on connect
// and after a broker restart.
func TestDeploymentTimeoutAndRepublish(t *testing.T) {
	b := startBroker(t, "--deployment-timeout", "3s")
	b.must(201, "POST", "/templates", map[string]any{"name": "T", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	id := b.createCores(core("core-t"))
	b.waitTask("/coreTasks/"+id, 2*time.Minute)
	dev := b.enrollDevice("core-t")
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "T"},
		"targets": map[string]any{"thingNames": []string{"core-t"}}})
	task := b.waitTask("/deploymentTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	item := task["deployments"].([]any)[0].(map[string]any)
	if task["taskStatus"] != "Failure" || !strings.Contains(fmt.Sprint(item["statusMessage"]), "3s") {
		t.Fatalf("timed-out task = %v", task)
	}
	// The desired document is waiting for the core when it connects ...
	agent, err := dev.connect(t, "core-t")
	if err != nil {
		t.Fatal(err)
	}
	agent.subscribeDeployments(nil)
	waitFor(t, 30*time.Second, "the desired document on connect", func() bool { return agent.docCount() >= 1 })
	// ... and again after a broker restart (retained state is not trusted).
	agent.client.Disconnect(100)
	b.stop()
	b.restart()
	agent2, err := dev.connect(t, "core-t")
	if err != nil {
		t.Fatal(err)
	}
	agent2.subscribeDeployments(nil)
	waitFor(t, 30*time.Second, "the desired document after a restart", func() bool { return agent2.docCount() >= 1 })
}
