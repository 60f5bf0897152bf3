// patches.js is the patch-tasks view. The patch API (spec/device-patcher.md)
// has no list of tasks, so the view opens one task by id
// (#/patches?task=ID, GET /patchTasks/{id} and its patches) or one client
// device's patches (#/patches?device=ID). Patch progress is not on the CDF
// events stream, so an unfinished task is re-read every few seconds while
// the view is open.

import { get, getAll } from './api.js';
import { h, table, badge, when, progress } from './dom.js';

const POLL_MS = 3000;

function patchRows(patches) {
  return patches.map((p) => {
    const steps = p.steps || [];
    const done = steps.filter((s) => s.status === 'success' || s.status === 'skipped').length;
    return h('tr', { dataset: { patch: p.patchId, status: p.patchStatus } },
      h('td', null, h('a', { href: `#/patches?device=${encodeURIComponent(p.deviceId)}` }, p.deviceId)),
      h('td', null, p.coreName ? h('a', { href: `#/cores/${encodeURIComponent(p.coreName)}` }, p.coreName) : '—'),
      h('td', null, p.patchTemplateName, p.patchTemplateVersion ? ` v${p.patchTemplateVersion}` : ''),
      h('td', null, badge(p.patchStatus, 'patch')),
      h('td', null, p.statusMessage || ''),
      h('td', { class: 'num' }, String(p.attempt || 1)),
      h('td', null, steps.length ? `${done}/${steps.length}` : '—'),
      h('td', null, when(p.updatedAt)));
  });
}

const HEADINGS = ['Device', 'Core', 'Template', 'Status', 'Message', 'Attempt', 'Steps', 'Updated'];

export function patchesView(params) {
  const taskID = params.get('task') || '';
  const deviceID = params.get('device') || '';
  const el = h('div', null);
  const form = h('form', { class: 'filters', id: 'patch-lookup',
    onsubmit: (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const t = String(f.get('task') || '').trim();
      const d = String(f.get('device') || '').trim();
      location.hash = t ? `#/patches?task=${encodeURIComponent(t)}` : d ? `#/patches?device=${encodeURIComponent(d)}` : '#/patches';
    } },
  h('input', { name: 'task', placeholder: 'Patch task id', value: taskID, spellcheck: 'false' }),
  h('span', { class: 'muted' }, 'or'),
  h('input', { name: 'device', placeholder: 'Client device id', value: deviceID, spellcheck: 'false' }),
  h('button', { type: 'submit' }, 'Show'));
  const body = h('div', null);
  el.append(form, body);
  let timer = null;
  let unsettled = false;

  const refresh = async () => {
    clearTimeout(timer);
    if (taskID) {
      const enc = encodeURIComponent(taskID);
      const [task, patches] = await Promise.all([
        get(`/patchTasks/${enc}`),
        getAll(`/patchTasks/${enc}/patches?count=1000`, 'patches', 'exclusiveStartToken', 'nextToken'),
      ]);
      const final = patches.filter((p) => p.patchStatus === 'success' || p.patchStatus === 'failed').length;
      const failed = patches.filter((p) => p.patchStatus === 'failed').length;
      unsettled = final < patches.length;
      body.replaceChildren(
        h('dl', { class: 'facts', id: 'patch-task' },
          h('dt', null, 'Task'), h('dd', null, h('code', null, task.taskId)),
          h('dt', null, 'Status'), h('dd', null, task.status ? badge(task.status, 'patch') : '—'),
          h('dt', null, 'Patches done'), h('dd', null, progress(final, patches.length, failed)),
          h('dt', null, 'Created'), h('dd', null, when(task.createdAt)),
          h('dt', null, 'Updated'), h('dd', null, when(task.updatedAt))),
        table('patches-table', HEADINGS, patchRows(patches), 'This task has no patches.'));
    } else if (deviceID) {
      const patches = await getAll(`/devices/${encodeURIComponent(deviceID)}/patches?count=1000`, 'patches', 'exclusiveStartToken', 'nextToken');
      unsettled = patches.some((p) => p.patchStatus !== 'success' && p.patchStatus !== 'failed');
      body.replaceChildren(table('patches-table', HEADINGS, patchRows(patches), 'No patches for this device.'));
    } else {
      unsettled = false;
      body.replaceChildren(h('p', { class: 'muted' },
        'Open a patch task by the id POST /patchTasks answered (x-taskId), or a client device\'s patches.'));
    }
    if (unsettled) {
      timer = setTimeout(() => {
        if (el.isConnected) refresh().catch(() => {});
      }, POLL_MS);
    }
  };
  return { title: 'Patch tasks', el, refresh, onEvent: () => false, unsettled: () => unsettled };
}
