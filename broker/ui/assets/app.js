// app.js is the dashboard: a hash router over five views (fleet summary,
// cores, a core, tasks, patches), all read from the broker API on the same
// origin, and kept current by the events stream (/events) — no polling.
// After an event the visible view re-reads what it shows; while a task it
// shows is unfinished, the event also schedules a few follow-up reads,
// because a task completes a moment after the event that finished it.

import { get, getAll, logout, subscribe, APIError } from './api.js';
import { h, table, badge, when, progress } from './dom.js';
import { barChart } from './chart.js';
import { patchesView } from './patches.js';

const view = document.getElementById('view');
const live = document.getElementById('live');
const FINAL = new Set(['Success', 'Failure']);

/** recent events, newest first, shown on the tasks page. */
const recentEvents = [];

// ---- fleet summary -------------------------------------------------------

const SUMMARY_SERIES = [
  { key: 'desiredInUse', label: 'desired' },
  { key: 'reportedInUse', label: 'reported' },
  { key: 'lastDeploymentInProgress', label: 'in progress' },
  { key: 'lastDeploymentFailed', label: 'failed' },
];

function summaryRows(summary) {
  const rows = [];
  const templates = (summary && summary.templates) || {};
  for (const name of Object.keys(templates).sort()) {
    const t = templates[name];
    const versions = Object.keys(t.versions || {}).sort((a, b) => Number(a) - Number(b));
    for (const v of versions) rows.push({ name, version: v, latest: t.latestVersion, ...t.versions[v] });
  }
  return rows;
}

function summaryView() {
  const body = h('div', null);
  const refresh = async () => {
    const rows = summaryRows(await get('/fleet/summary'));
    const total = rows.reduce((n, r) => n + (r.desiredInUse || 0), 0);
    const groups = rows.map((r) => ({ label: r.name === 'None' ? 'no template' : `${r.name} v${r.version}`, values: r }));
    body.replaceChildren(
      h('p', { class: 'muted' }, `${total} core${total === 1 ? '' : 's'} by desired template version; `,
        'reported = running it, in progress / failed = the outcome of their last deployment.'),
      rows.length ? h('figure', { id: 'summary-chart' }, barChart(groups, SUMMARY_SERIES, 'Cores per template version')) : null,
      table('summary-table', ['Template', 'Version', 'Desired', 'Reported', 'In progress', 'Failed', 'Succeeded'],
        rows.map((r) => h('tr', { dataset: { template: r.name, version: r.version } },
          h('td', null, r.name === 'None' ? h('span', { class: 'muted' }, 'no template') : r.name),
          h('td', null, r.name === 'None' ? '—' : `v${r.version}`, Number(r.version) === r.latest && r.latest > 0 ? h('span', { class: 'tag' }, 'latest') : null),
          h('td', { class: 'num', dataset: { col: 'desired' } }, h('a', { href: coresHref(r) }, String(r.desiredInUse || 0))),
          h('td', { class: 'num', dataset: { col: 'reported' } }, String(r.reportedInUse || 0)),
          h('td', { class: 'num', dataset: { col: 'inProgress' } }, String(r.lastDeploymentInProgress || 0)),
          h('td', { class: 'num', dataset: { col: 'failed' } }, String(r.lastDeploymentFailed || 0)),
          h('td', { class: 'num', dataset: { col: 'success' } }, String(r.lastDeploymentSuccess || 0)))),
        'No cores yet.'));
  };
  return { title: 'Fleet summary', el: body, refresh, onEvent: () => true };
}

function coresHref(r) {
  if (r.name === 'None') return '#/cores';
  return `#/cores?templateName=${encodeURIComponent(r.name)}&templateVersion=${encodeURIComponent(r.version)}`;
}

// ---- cores -----------------------------------------------------------------

function templateText(t) {
  return t && t.name && t.name !== 'None' && t.version ? `${t.name} v${t.version}` : '—';
}

/**
 * The core list reads /fleet/cores (a ggfleet addition to the CDF API): one
 * request a page, with each core's status and connectivity, and the name,
 * health and connectivity filters applied by the broker to the whole fleet.
 */
const PAGE = 50;

function coresView(params) {
  const filter = { text: params.get('q') || '', conn: '', health: '' };
  const templateName = params.get('templateName') || '';
  const templateVersion = params.get('templateVersion') || '';
  let cursors = ['']; // cursors[i] starts page i (exclusiveStartThingName)
  let page = 0;
  let result = null; // the page shown: {cores, matching, pagination}
  let reads = 0; // drops a read that a newer one overtook
  const list = h('div', null);
  const draw = () => {
    if (!result) return;
    const more = Boolean(result.pagination && result.pagination.lastEvaluated);
    const pages = Math.max(1, Math.ceil(result.matching / PAGE));
    const turn = (by) => { page += by; load(v); };
    const pager = page > 0 || more ? h('span', { class: 'pager' },
      h('button', { type: 'button', class: 'link', disabled: page === 0, onclick: () => turn(-1) }, '‹ previous'),
      ` page ${page + 1} of ${pages} `,
      h('button', { type: 'button', class: 'link', disabled: !more, onclick: () => turn(1) }, 'next ›')) : null;
    list.replaceChildren(
      h('p', { class: 'muted', id: 'cores-matching', dataset: { matching: String(result.matching) } },
        `${result.matching} ${result.matching === 1 ? 'core matches' : 'cores match'}`, ' ', pager),
      table('cores-table', ['Core', 'Health', 'Connectivity', 'Last seen', 'Desired template', 'Reported template', 'Deployment'],
        result.cores.map((c) => {
          const rep = (c.template && c.template.reported) || {};
          return h('tr', { dataset: { core: c.name } },
            h('td', null, h('a', { href: `#/cores/${encodeURIComponent(c.name)}` }, c.name)),
            h('td', null, badge(c.status || 'UNKNOWN', 'health')),
            h('td', null, badge(c.connectivity || 'OFFLINE', 'conn')),
            h('td', null, when(c.lastSeenAt)),
            h('td', null, templateText(c.template && c.template.desired)),
            h('td', null, templateText(rep)),
            h('td', null, rep.deploymentStatus && rep.deploymentStatus !== 'None' ? badge(rep.deploymentStatus, 'deploy') : '—'));
        }), 'No cores match.'));
  };
  const refresh = async () => {
    const read = ++reads;
    const q = new URLSearchParams({ count: String(PAGE) });
    if (filter.text) q.set('nameContains', filter.text);
    if (filter.conn) q.set('connectivity', filter.conn);
    if (filter.health) q.set('status', filter.health);
    if (templateName) q.set('templateName', templateName);
    if (templateName && templateVersion && templateVersion !== '0') q.set('templateVersion', templateVersion);
    if (cursors[page]) q.set('exclusiveStartThingName', cursors[page]);
    const got = await get(`/fleet/cores?${q}`);
    if (read !== reads) return;
    result = got;
    const last = got.pagination && got.pagination.lastEvaluated && got.pagination.lastEvaluated.thingName;
    cursors = cursors.slice(0, page + 1);
    if (last) cursors.push(last);
    draw();
  };
  /** A filter changed: back to the first page. */
  const restart = () => { page = 0; cursors = ['']; load(v); };
  let typing = null;
  const select = (label, key, options) => h('label', null, label, ' ',
    h('select', { id: `core-${key}`, onchange: (e) => { filter[key] = e.target.value; restart(); } },
      options.map((o) => h('option', { value: o }, o || 'any'))));
  const bar = h('div', { class: 'filters' },
    h('input', { type: 'search', id: 'core-filter', placeholder: 'Filter by name', value: filter.text,
      oninput: (e) => { filter.text = e.target.value; clearTimeout(typing); typing = setTimeout(restart, 200); } }),
    select('Connectivity', 'conn', ['', 'ONLINE', 'OFFLINE']),
    select('Health', 'health', ['', 'HEALTHY', 'UNHEALTHY', 'UNKNOWN']),
    templateName ? h('span', { class: 'tag' }, `template ${templateName} v${templateVersion} `,
      h('a', { href: '#/cores' }, '×')) : null);
  const el = h('div', null, bar, list);
  const v = { title: 'Cores', el, refresh, onEvent: () => true };
  return v;
}

// ---- one core --------------------------------------------------------------

function coreView(name) {
  const el = h('div', null);
  const refresh = async () => {
    const enc = encodeURIComponent(name);
    const [core, deps, devices] = await Promise.all([
      get(`/cores/${enc}`),
      get(`/cores/${enc}/deployments?count=100`).catch(() => ({ deployments: [] })),
      getAll(`/devices?coreName=${enc}&count=1000`, 'devices', 'exclusiveStartThingName', 'thingName'),
    ]);
    const d = core.device || {};
    const rep = (core.template && core.template.reported) || {};
    el.replaceChildren(
      h('p', null, h('a', { href: '#/cores' }, '← all cores')),
      h('dl', { class: 'facts', id: 'core-facts' },
        fact('Health', badge(d.status || 'UNKNOWN', 'health')),
        fact('Connectivity', badge(d.connectivity || 'OFFLINE', 'conn')),
        fact('Last seen', when(d.lastSeenAt)),
        fact('Last status update', when(d.lastStatusUpdateTimestamp)),
        fact('Greengrass', d.coreVersion || '—'),
        fact('Platform', [d.platform, d.architecture].filter(Boolean).join(' / ') || '—'),
        fact('Desired template', templateText(core.template && core.template.desired)),
        fact('Reported template', templateText(rep), ' ', rep.deploymentStatus && rep.deploymentStatus !== 'None' ? badge(rep.deploymentStatus, 'deploy') : null),
        rep.deploymentStatusMessage ? fact('Deployment message', rep.deploymentStatusMessage) : null,
        fact('Created', when(core.createdAt))),
      h('h2', null, 'Components'),
      table('components-table', ['Component', 'Version'],
        (d.installedComponents || []).map((c) => h('tr', { dataset: { component: c.name } }, h('td', null, c.name), h('td', null, c.version))),
        'No components reported yet.'),
      h('h2', null, 'Effective deployments'),
      table('effective-table', ['Deployment', 'Status', 'Reason', 'Updated'],
        (d.effectiveDeployments || []).map((e) => h('tr', null,
          h('td', null, e.deploymentName || e.deploymentId || '—'),
          h('td', null, badge(e.coreDeviceExecutionStatus || 'UNKNOWN', 'deploy')),
          h('td', null, e.reason || ''),
          h('td', null, when(e.updatedAt)))),
        'No effective deployments reported.'),
      h('h2', null, 'Deployment tasks'),
      table('core-deployments-table', ['Task', 'Status', 'Message', 'Updated'],
        ((deps && deps.deployments) || []).map((x) => h('tr', null,
          h('td', null, h('code', null, x.taskId || '—')),
          h('td', null, badge(x.taskStatus)),
          h('td', null, x.statusMessage || ''),
          h('td', null, when(x.updatedAt)))),
        'No deployments to this core.'),
      h('h2', null, 'Client devices'),
      table('devices-table', ['Device', 'Created', 'Patches'],
        devices.map((x) => h('tr', { dataset: { device: x.name } }, h('td', null, x.name), h('td', null, when(x.createdAt)),
          h('td', null, h('a', { href: `#/patches?device=${encodeURIComponent(x.name)}` }, 'patches')))),
        'No client devices.'));
  };
  const onEvent = (env) => {
    const det = (env && env.detail) || {};
    return !det.coreName || det.coreName === name;
  };
  return { title: `Core ${name}`, el, refresh, onEvent };
}

function fact(label, ...value) {
  return [h('dt', null, label), h('dd', null, value)];
}

// ---- tasks -----------------------------------------------------------------

/** details of finished tasks never change: keep them. */
const finishedDetail = new Map();

async function detail(path, id) {
  const key = `${path}/${id}`;
  if (finishedDetail.has(key)) return finishedDetail.get(key);
  const t = await get(`${path}/${encodeURIComponent(id)}`);
  if (FINAL.has(t.taskStatus)) finishedDetail.set(key, t);
  return t;
}

function newestFirst(a, b) {
  return String(b.createdAt || '').localeCompare(String(a.createdAt || ''));
}

function itemProgress(items) {
  const done = items.filter((i) => FINAL.has(i.taskStatus)).length;
  const failed = items.filter((i) => i.taskStatus === 'Failure').length;
  return progress(done, items.length, failed);
}

function tasksView() {
  const el = h('div', null);
  let unsettled = false;
  const refresh = async () => {
    const [deps, cores] = await Promise.all([
      getAll('/deploymentTasks?count=1000', 'deploymentTasks', 'exclusiveStartTaskId', 'taskId', 5),
      getAll('/coreTasks?count=1000', 'tasks', 'exclusiveStartTaskId', 'taskId', 5),
    ]);
    const depShown = deps.sort(newestFirst).slice(0, 25);
    const coreShown = cores.sort(newestFirst).slice(0, 25);
    const depDetail = await Promise.all(depShown.map((t) => detail('/deploymentTasks', t.id).catch(() => t)));
    const coreDetail = await Promise.all(coreShown.map((t) => detail('/coreTasks', t.id).catch(() => t)));
    unsettled = [...depDetail, ...coreDetail].some((t) => !FINAL.has(t.taskStatus));
    el.replaceChildren(
      h('h2', null, 'Deployment tasks'),
      table('deployment-tasks', ['Task', 'Template', 'Status', 'Cores done', 'Per core', 'Created', 'Updated'],
        depDetail.map((t) => h('tr', { dataset: { task: t.id, status: t.taskStatus } },
          h('td', null, h('code', null, t.id)),
          h('td', null, templateText(t.template)),
          h('td', { class: 'task-status' }, badge(t.taskStatus)),
          h('td', null, itemProgress(t.deployments || [])),
          h('td', null, (t.deployments || []).slice(0, 8).map((x) =>
            h('span', { class: 'item', title: x.statusMessage || '' },
              h('a', { href: `#/cores/${encodeURIComponent(x.coreName)}` }, x.coreName), ' ', badge(x.taskStatus))),
            (t.deployments || []).length > 8 ? h('span', { class: 'muted' }, ` +${t.deployments.length - 8} more`) : null,
            t.statusMessage ? h('div', { class: 'muted small' }, t.statusMessage) : null),
          h('td', null, when(t.createdAt)),
          h('td', null, when(t.updatedAt)))),
        'No deployment tasks yet.'),
      h('h2', null, 'Core tasks'),
      table('core-tasks', ['Task', 'Type', 'Status', 'Cores done', 'Created', 'Updated'],
        coreDetail.map((t) => h('tr', { dataset: { task: t.id, status: t.taskStatus } },
          h('td', null, h('code', null, t.id)),
          h('td', null, t.type || ''),
          h('td', { class: 'task-status' }, badge(t.taskStatus), t.statusMessage ? h('div', { class: 'muted small' }, t.statusMessage) : null),
          h('td', null, itemProgress(t.cores || [])),
          h('td', null, when(t.createdAt)),
          h('td', null, when(t.updatedAt)))),
        'No core tasks yet.'),
      h('h2', null, 'Live events'),
      eventList());
  };
  return { title: 'Tasks', el, refresh, onEvent: () => true, unsettled: () => unsettled };
}

function eventList() {
  return table('events', ['Time', 'Event', 'Core', 'Task', 'Status'],
    recentEvents.slice(0, 20).map((e) => {
      const d = e.detail || {};
      return h('tr', { dataset: { type: e['detail-type'] || '' } },
        h('td', null, when(e.time)),
        h('td', null, e['detail-type'] || ''),
        h('td', null, d.coreName || d.deviceName || ''),
        h('td', null, h('code', null, d.taskId || d.deploymentTaskId || '')),
        h('td', null, d.status || ''));
    }), 'No events since this page opened.');
}

// ---- router and live updates ---------------------------------------------------

let current = null;
let timers = [];

function route() {
  const hash = location.hash.replace(/^#/, '') || '/summary';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let v;
  if (parts[0] === 'cores' && parts[1]) v = coreView(parts[1]);
  else if (parts[0] === 'cores') v = coresView(params);
  else if (parts[0] === 'tasks') v = tasksView();
  else if (parts[0] === 'patches') v = patchesView(params);
  else v = summaryView();
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === (parts[0] || 'summary'));
  }
  timers.forEach(clearTimeout);
  timers = [];
  current = v;
  document.title = `${v.title} — ggfleet`;
  view.replaceChildren(h('h1', null, v.title), h('p', { id: 'error', class: 'error', role: 'alert', hidden: true }), v.el);
  load(v);
}

async function load(v) {
  const err = document.getElementById('error');
  try {
    await v.refresh();
    if (v !== current) return;
    err.hidden = true;
    view.dataset.loadedAt = String(Date.now());
  } catch (e) {
    if (v !== current || (e instanceof APIError && e.status === 401)) return;
    err.textContent = e.message || String(e);
    err.hidden = false;
  }
}

/** afterEvent re-reads the view soon, and again a few times while it shows unfinished tasks. */
function afterEvent(v) {
  timers.forEach(clearTimeout);
  timers = [];
  const steps = [250, 1000, 2500, 5000, 10000];
  let i = 0;
  const next = () => {
    if (v !== current || i >= steps.length) return;
    timers.push(setTimeout(async () => {
      await load(v);
      i++;
      if (v.unsettled && v.unsettled()) next();
    }, i === 0 ? steps[0] : steps[i] - steps[i - 1]));
  };
  next();
}

function onEvent(env) {
  recentEvents.unshift(env);
  recentEvents.length = Math.min(recentEvents.length, 50);
  const v = current;
  if (v && v.onEvent(env)) afterEvent(v);
}

function onState(state) {
  live.dataset.state = state;
  live.textContent = state === 'live' ? '● live' : state;
}

document.getElementById('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
subscribe(onEvent, onState);
route();
