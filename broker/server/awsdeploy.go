package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// componentChecker is the template service's component catalogue: the
// provider when it has one (Greengrass's DescribeComponent in aws mode),
// else nil, and component keys and versions are checked for form only.
func componentChecker(p provider.Provider) templates.ComponentChecker {
	if c, ok := p.(templates.ComponentChecker); ok {
		return c
	}
	return nil
}

// greengrassReader is where GET /cores/{name} reads the device block in
// aws mode (spec §7), else nil: agents' health reports are the source.
func greengrassReader(p provider.Provider) cores.Greengrass {
	if g, ok := p.(cores.Greengrass); ok {
		return g
	}
	return nil
}

// greengrassDeployer is the deployment service's Publisher in aws mode:
// Greengrass itself delivers deployments. The desired document of a core
// becomes one Greengrass V2 deployment per (task, template version), made
// once with CreateDeployment on the template version's thing group (the
// group the deployment service has just moved the core into), with an
// idempotency token so a re-run after a crash makes no second one. Each
// core's outcome is then read from its IoT job execution by polling
// DescribeJobExecution (no rule, queue or extra IAM role is needed; the
// client-side rate limit keeps polling within the quota) and fed to the
// deployment service as the agent's report would be.
type greengrassDeployer struct {
	prov   *awsprov.Provider
	report func(ctx context.Context, thing string, m mqttmsg.DeploymentStatusMsg) error
	// jobConfig is a task's merged iotJobConfig/jobConfig
	// (deploy.Service.JobConfig); nil leaves Greengrass's defaults.
	jobConfig func(ctx context.Context, taskID string) (*templates.JobConfig, error)
	log       *slog.Logger
	interval  time.Duration

	mu    sync.Mutex
	made  map[string]*madeDeployment // by deploymentKey
	watch map[string]watched         // by core
	wake  chan struct{}
}

// madeDeployment is one CreateDeployment call, done or in flight.
type madeDeployment struct {
	done chan struct{}
	dep  awsprov.Deployment
	err  error
}

// watched is a core whose job execution is being followed.
type watched struct {
	jobID, deploymentID, taskID string
}

var _ deploy.Publisher = (*greengrassDeployer)(nil)

func newGreengrassDeployer(p *awsprov.Provider, log *slog.Logger, interval time.Duration) *greengrassDeployer {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	return &greengrassDeployer{prov: p, log: log, interval: interval,
		made: map[string]*madeDeployment{}, watch: map[string]watched{}, wake: make(chan struct{}, 1)}
}

// deploymentKey names the one deployment of a task's template version.
func deploymentKey(m mqttmsg.DeploymentMsg) string {
	return m.TaskID + "\x00" + m.TemplateName + "\x00" + strconv.Itoa(m.TemplateVersion)
}

// Publish turns a desired deployment document into the Greengrass
// deployment of its template version and starts following the core's job
// execution. Other messages have no AWS delivery here.
func (g *greengrassDeployer) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	if suffix != mqttmsg.Deployments {
		return errkind.New(errkind.Unavailable, "message %s to %s: in aws mode only deployments are delivered (by Greengrass)", suffix, thing)
	}
	m, err := mqttmsg.Decode[mqttmsg.DeploymentMsg](payload)
	if err != nil {
		return fmt.Errorf("deployment document of %s: %w", thing, err)
	}
	dep, err := g.deployment(ctx, m)
	if err != nil {
		// Fail the core's item now, with AWS's reason, rather than at the deadline.
		if rerr := g.report(ctx, thing, mqttmsg.DeploymentStatusMsg{Version: 1, DeploymentID: m.DeploymentID, TaskID: m.TaskID,
			Status: mqttmsg.StatusFailed, Reason: "Greengrass CreateDeployment failed: " + errkind.Message(err), Timestamp: time.Now()}); rerr != nil {
			g.log.Warn("record failed deployment", "core", thing, "err", rerr)
		}
		return err
	}
	g.mu.Lock()
	g.watch[thing] = watched{jobID: dep.JobID, deploymentID: m.DeploymentID, taskID: m.TaskID}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return nil
}

// deployment returns the Greengrass deployment of m's task and template
// version, making it on first use; concurrent callers share one call.
func (g *greengrassDeployer) deployment(ctx context.Context, m mqttmsg.DeploymentMsg) (awsprov.Deployment, error) {
	key := deploymentKey(m)
	g.mu.Lock()
	md, ok := g.made[key]
	if !ok {
		md = &madeDeployment{done: make(chan struct{})}
		g.made[key] = md
	}
	g.mu.Unlock()
	if ok {
		select {
		case <-md.done:
		case <-ctx.Done():
			return awsprov.Deployment{}, ctx.Err()
		}
		return md.dep, md.err
	}
	md.dep, md.err = g.create(ctx, m)
	if md.err != nil {
		g.mu.Lock()
		delete(g.made, key) // the next core tries again
		g.mu.Unlock()
	} else {
		g.log.Info("greengrass deployment created", "task", m.TaskID, "template", m.TemplateName, "version", m.TemplateVersion,
			"deploymentId", md.dep.ID, "jobId", md.dep.JobID)
	}
	close(md.done)
	return md.dep, md.err
}

// create makes the Greengrass deployment of m, with its task's job
// configuration.
func (g *greengrassDeployer) create(ctx context.Context, m mqttmsg.DeploymentMsg) (awsprov.Deployment, error) {
	s := spec(m)
	if g.jobConfig != nil {
		jc, err := g.jobConfig(ctx, m.TaskID)
		if err != nil {
			return awsprov.Deployment{}, fmt.Errorf("job configuration of task %s: %w", m.TaskID, err)
		}
		s.JobConfig = jc
	}
	return g.prov.CreateDeployment(ctx, s)
}

// TaskTagKey tags the IoT job of a task's deployment with the task id, under
// CDF's key, so job events can be mapped back to the task (spec §5.3).
const TaskTagKey = "cdf-greengrass2-provisioning-deployment-task-id"

// spec is the Greengrass deployment of a desired document: its components
// (with configuration updates and runWith), deploymentPolicies, tags on the
// deployment and the task id on its IoT job.
func spec(m mqttmsg.DeploymentMsg) awsprov.DeploymentSpec {
	sum := sha256.Sum256([]byte(deploymentKey(m)))
	s := awsprov.DeploymentSpec{
		TargetGroup: deploy.GroupName(m.TemplateName, m.TemplateVersion),
		Name:        fmt.Sprintf("%s v%d (task %s)", m.TemplateName, m.TemplateVersion, m.TaskID),
		Components:  map[string]awsprov.Component{},
		Policies:    m.DeploymentPolicies,
		Tags: map[string]string{"ggfleet:taskId": m.TaskID, "ggfleet:template": m.TemplateName,
			"ggfleet:templateVersion": strconv.Itoa(m.TemplateVersion)},
		JobTags:     map[string]string{TaskTagKey: m.TaskID},
		ClientToken: hex.EncodeToString(sum[:20]),
	}
	for name, c := range m.Components {
		comp := awsprov.Component{Version: c.ComponentVersion}
		if c.ConfigurationUpdate != nil {
			comp.Merge, comp.Reset = c.ConfigurationUpdate.Merge, c.ConfigurationUpdate.Reset
		}
		if c.RunWith != nil {
			comp.PosixUser = c.RunWith.PosixUser
		}
		s.Components[name] = comp
	}
	return s
}

// Run polls the followed job executions every interval until ctx ends.
func (g *greengrassDeployer) Run(ctx context.Context) error {
	tick := time.NewTicker(g.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-g.wake:
			// Let the other cores of the batch be published first.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(g.interval):
			}
		}
		g.poll(ctx)
	}
}

// poll reads every followed core's job execution once and reports final ones.
func (g *greengrassDeployer) poll(ctx context.Context) {
	g.mu.Lock()
	cores := make(map[string]watched, len(g.watch))
	for k, v := range g.watch {
		cores[k] = v
	}
	g.mu.Unlock()
	for core, w := range cores {
		if ctx.Err() != nil {
			return
		}
		je, err := g.prov.DescribeJobExecution(ctx, w.jobID, core)
		if errkind.Is(err, errkind.NotFound) {
			continue // the job has not reached the core yet
		}
		if err != nil {
			g.log.Warn("read deployment job execution; trying again", "core", core, "jobId", w.jobID, "err", err)
			continue
		}
		if !awsprov.JobFinal(je.Status) {
			continue
		}
		m := mqttmsg.DeploymentStatusMsg{Version: 1, DeploymentID: w.deploymentID, TaskID: w.taskID, Status: mqttmsg.StatusSucceeded, Timestamp: time.Now()}
		if je.Status != awsprov.JobSucceeded {
			m.Status = mqttmsg.StatusFailed
			m.DetailedStatus = je.Details["detailed-deployment-status"]
			m.Reason = je.Details["deployment-failure-cause"]
			if m.Reason == "" {
				m.Reason = "IoT job execution " + je.Status
			}
		}
		if err := g.report(ctx, core, m); err != nil {
			g.log.Warn("record deployment outcome; trying again", "core", core, "err", err)
			continue
		}
		g.mu.Lock()
		if cur, ok := g.watch[core]; ok && cur == w {
			delete(g.watch, core)
		}
		g.mu.Unlock()
	}
}
