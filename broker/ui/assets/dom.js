// dom.js builds elements without innerHTML: every text from the broker is
// set as text, so nothing a device reports can become markup.

/** h creates an element: h('a', {href: '#/x', class: 'y'}, 'text', child). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** table builds a table from column headings and rows of cells. */
export function table(id, headings, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'muted empty', id }, empty);
  return h('table', { id },
    h('thead', null, h('tr', null, headings.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, rows));
}

/** badge shows a status word styled by its value (data-status). */
export function badge(value, kind = 'status') {
  const v = value || 'UNKNOWN';
  return h('span', { class: `badge ${kind}`, dataset: { status: v } }, v);
}

/** when shows a timestamp as "5s ago" with the exact time as a tooltip. */
export function when(ts) {
  if (!ts) return h('span', { class: 'muted' }, '—');
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return h('span', null, String(ts));
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, ago(d));
}

/** ago formats the time since d. */
export function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return 'just now';
  if (s < 90) return `${s}s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return d.toISOString().slice(0, 10);
}

/** progress shows done of total as a bar and "done/total". */
export function progress(done, total, failed = 0) {
  const pct = total > 0 ? Math.round((100 * done) / total) : 0;
  const bar = h('progress', { max: String(Math.max(total, 1)), value: String(done) });
  return h('span', { class: 'progress', dataset: { done: String(done), total: String(total), failed: String(failed) } },
    bar, ` ${done}/${total}`, total > 0 ? ` (${pct}%)` : '');
}
