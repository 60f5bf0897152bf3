// api.js is the dashboard's one door to the broker: same-origin requests
// that carry the HttpOnly session cookie (the page never sees a token), and
// the events stream. A 401 means the session ended: back to the login page.

/** APIError carries the broker's {"message"} and the HTTP status. */
export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** CSRF header the broker requires on state-changing requests made with the session cookie. */
const CSRF = { 'X-Requested-With': 'ggfleet-ui' };

/** get fetches a JSON resource of the broker API. */
export async function get(path) {
  const res = await fetch(path, {
    headers: { Accept: 'application/json' },
    credentials: 'same-origin',
    cache: 'no-store',
  });
  return decode(res);
}

/** getAll follows lastEvaluated pagination (at most maxPages pages). */
export async function getAll(path, listKey, cursorParam, cursorKey, maxPages = 20) {
  const out = [];
  let after = '';
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const url = after ? `${path}${sep}${cursorParam}=${encodeURIComponent(after)}` : path;
    const page = await get(url);
    out.push(...((page && page[listKey]) || []));
    const last = page && page.pagination && page.pagination.lastEvaluated;
    if (!last || !last[cursorKey]) break;
    after = String(last[cursorKey]);
  }
  return out;
}

async function decode(res) {
  if (res.status === 401) {
    location.assign('/ui/login?error=expired');
    throw new APIError(401, 'the session has ended');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    throw new APIError(res.status, (data && data.message) || `${res.status} ${res.statusText}`);
  }
  return data;
}

/** logout ends the session on the broker and returns to the login page. */
export async function logout() {
  try {
    await fetch('/ui/logout', { method: 'POST', headers: { ...CSRF, Accept: 'application/json' }, credentials: 'same-origin' });
  } finally {
    location.assign('/ui/login');
  }
}

/** The CDF event detail-types the broker streams on /events. */
export const EVENT_TYPES = [
  'Core Created Event',
  'Core Deleted Event',
  'Core Template Updated Event',
  'Device Created Event',
  'Device Deleted Event',
  'DeploymentTask Created Event',
];

/**
 * subscribe follows /events (authenticated by the cookie; EventSource sends
 * no headers). onEvent gets each event's envelope, onState 'live',
 * 'reconnecting' or 'closed'. The browser reconnects by itself with
 * Last-Event-ID; a stream the broker refused (closed) is retried after a
 * pause, and a dead session then shows up on the next API request.
 */
export function subscribe(onEvent, onState) {
  let es = null;
  let retry = null;
  const open = () => {
    es = new EventSource('/events');
    es.onopen = () => onState('live');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        onState('closed');
        clearTimeout(retry);
        retry = setTimeout(open, 5000);
      } else {
        onState('reconnecting');
      }
    };
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (e) => {
        let env;
        try {
          env = JSON.parse(e.data);
        } catch {
          return;
        }
        onEvent(env);
      });
    }
  };
  open();
  return () => {
    clearTimeout(retry);
    if (es) es.close();
  };
}
