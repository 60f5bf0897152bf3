// dashboard.spec.mjs drives the ggfleet dashboard in headless Chromium
// (Debian's chromium through playwright-core, no browser download). It is
// started by e2e/ui_test.go, which runs a real `ggfleet serve` with a core
// whose ggagent is running, and passes everything by environment:
//
//   GGFLEET_URL     the broker's base URL
//   GGFLEET_TOKEN   an API token to type into the login form
//   GGFLEET_BIN     the ggfleet binary, for the CLI deployment
//   CHROMIUM        the browser executable
//   OUT_DIR         where screenshots go (testout/ui)
//   CORE, TEMPLATE  the enrolled core and the template to deploy to it
//   OTHER_CORE      a core without a template
//   DEVICE          a client device of CORE
//   PATCH_TASK      a patch task with one patch, for DEVICE (no target profile)
//
// Each step logs one line; the first failed check throws, the script exits
// 1 and keeps a screenshot of the page as it was (failure.png).

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
};
const base = env('GGFLEET_URL');
const token = env('GGFLEET_TOKEN');
const ggfleet = env('GGFLEET_BIN');
const outDir = env('OUT_DIR');
const core = env('CORE');
const otherCore = env('OTHER_CORE');
const template = env('TEMPLATE');
const device = env('DEVICE');
const patchTask = env('PATCH_TASK');
const WAIT = 120_000; // generous: a state is awaited, never timed

mkdirSync(outDir, { recursive: true });
const log = (msg) => console.log(`[ui] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // A CSP violation or a script error is a bug; a request the test made
  // to be refused (401 after logout, 403 and 400 for the CSRF check) is not.
  if (m.type() === 'error' && !/status of (400|401|403)|401|Unauthorized/.test(m.text())) problems.push(`console error: ${m.text()}`);
});
const shot = async (name) => {
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
  log(`screenshot ${name}.png`);
};

try {
  // 1. Not logged in: the dashboard sends the browser to the login page.
  await page.goto(`${base}/ui/`);
  await page.waitForURL(/\/ui\/login/, { timeout: WAIT });
  await shot('01-login');

  // A wrong token is refused with a message, and no cookie is set.
  await page.fill('#token', 'ggf_wrong');
  await Promise.all([page.waitForURL(/error=invalid/, { timeout: WAIT }), page.click('button[type=submit]')]);
  check(await page.isVisible('#login-error'), 'the login error is shown');
  check((await context.cookies()).length === 0, 'no cookie after a bad login');
  log('a wrong token is refused');

  // 2. Log in with the real token.
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}/ui/`, { timeout: WAIT }), page.click('button[type=submit]')]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'ggfleet_session');
  check(session, 'the session cookie is set');
  check(session.httpOnly && session.sameSite === 'Strict', `cookie is HttpOnly and SameSite=Strict: ${JSON.stringify(session)}`);
  check(!session.value.includes(token), 'the cookie does not hold the token');
  const stored = await page.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie }));
  check(!stored.includes(token) && !stored.includes('ggs_'), `nothing secret in page storage: ${stored}`);
  log('logged in; the token is in no storage the page can read');

  // The cookie works for the page's own writes only with the CSRF header.
  const writes = await page.evaluate(async () => {
    const post = (headers) => fetch('/templates', { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: '{}' });
    return [(await post({})).status, (await post({ 'X-Requested-With': 'ggfleet-ui' })).status];
  });
  check(writes[0] === 403 && writes[1] === 400, `POST without / with the CSRF header: ${writes}, want 403 then 400 (the empty template)`);
  log('a write needs the CSRF header');

  // 3. Fleet summary: chart and table.
  await page.waitForSelector('#summary-table tbody tr', { timeout: WAIT });
  await page.waitForSelector('#live[data-state="live"]', { timeout: WAIT });
  const row = page.locator(`#summary-table tr[data-template="${template}"][data-version="1"]`);
  await row.waitFor({ timeout: WAIT });
  check((await row.locator('[data-col=desired]').innerText()).trim() === '1', `${template} v1 desired = 1`);
  check((await row.locator('[data-col=reported]').innerText()).trim() === '1', `${template} v1 reported = 1`);
  const none = page.locator('#summary-table tr[data-template="None"]');
  check((await none.locator('[data-col=desired]').innerText()).trim() === '1', 'one core without a template');
  const bar = page.locator(`#summary-chart rect[data-group="${template} v1"][data-series="desiredInUse"]`);
  check((await bar.getAttribute('data-value')) === '1', 'the chart has a desired bar of 1 for v1');
  check(Number(await bar.getAttribute('height')) > 0, 'the bar is drawn');
  await shot('02-summary');
  log('fleet summary chart and table');

  // 4. Cores list with health, connectivity, last seen; the filter.
  await page.click('nav a[data-nav=cores]');
  await page.waitForSelector('#cores-table', { timeout: WAIT });
  const coreRow = page.locator(`#cores-table tr[data-core="${core}"]`);
  await coreRow.locator('.badge[data-status="ONLINE"]').waitFor({ timeout: WAIT });
  check(await coreRow.locator('.badge[data-status="HEALTHY"]').count() === 1, `${core} is HEALTHY`);
  check(await coreRow.locator('time').count() === 1, `${core} has a last-seen time`);
  check(await page.locator(`#cores-table tr[data-core="${otherCore}"]`).count() === 1, `${otherCore} is listed`);
  // The filters are applied by the broker (/fleet/cores): wait for the
  // count of matching cores, then look at the rows.
  const matching = (n) => page.waitForSelector(`#cores-matching[data-matching="${n}"]`, { timeout: WAIT });
  await page.fill('#core-filter', core);
  await matching(1);
  check(await page.locator('#cores-table tbody tr').count() === 1, 'the name filter keeps one core');
  await shot('03-cores');
  await page.fill('#core-filter', '');
  await matching(2);
  await page.selectOption('#core-conn', 'OFFLINE');
  await matching(1);
  check(await page.locator(`#cores-table tr[data-core="${otherCore}"]`).count() === 1, `${otherCore} is the OFFLINE core`);
  await page.selectOption('#core-conn', 'ONLINE');
  await page.selectOption('#core-health', 'HEALTHY');
  await matching(1);
  check(await coreRow.count() === 1, `${core} is the ONLINE and HEALTHY core`);
  await page.selectOption('#core-health', 'UNHEALTHY');
  await matching(0);
  await page.selectOption('#core-conn', '');
  await page.selectOption('#core-health', '');
  await matching(2);
  log('cores list and filters');

  // 5. Tasks page: a deployment started from the CLI reaches Success on
  // the page through the events stream, without a reload.
  await page.click('nav a[data-nav=tasks]');
  await page.waitForSelector('#deployment-tasks', { timeout: WAIT });
  await page.evaluate(() => { window.__sameDocument = 'yes'; });
  const out = execFileSync(ggfleet, ['deploy', '--template', template, '--core', core, '--no-wait', '-o', 'json'], {
    env: { ...process.env, GGFLEET_BROKER_URL: base, GGFLEET_TOKEN: token }, encoding: 'utf8',
  });
  const taskId = JSON.parse(out).id;
  check(taskId, `the CLI printed a task id: ${out}`);
  log(`deployment task ${taskId} started from the CLI`);
  const taskRow = page.locator(`#deployment-tasks tr[data-task="${taskId}"]`);
  await taskRow.waitFor({ timeout: WAIT });
  const seen = new Set([await taskRow.getAttribute('data-status')]);
  const deadline = Date.now() + WAIT;
  for (;;) {
    const s = await page.locator(`#deployment-tasks tr[data-task="${taskId}"]`).getAttribute('data-status').catch(() => null);
    if (s) seen.add(s);
    if (s === 'Success' || s === 'Failure') break;
    check(Date.now() < deadline, `task ${taskId} did not finish on the page; seen ${[...seen]}`);
    await page.waitForTimeout(100);
  }
  check(seen.has('Success'), `the task ended Success on the page (seen ${[...seen]})`);
  check(seen.size > 1, `the page showed the task before it finished (seen ${[...seen]})`);
  check(await page.evaluate(() => window.__sameDocument) === 'yes', 'the page was not reloaded');
  check((await taskRow.locator('.progress').getAttribute('data-done')) === '1', 'progress shows 1 core done');
  await page.locator('#events tr[data-type="Core Template Updated Event"]').first().waitFor({ timeout: WAIT });
  await shot('04-tasks');
  log(`task went ${[...seen].join(' → ')} live`);

  // 6. The core's detail: device block, components, deployments, client devices.
  await page.goto(`${base}/ui/#/cores/${encodeURIComponent(core)}`);
  await page.waitForSelector('#core-facts', { timeout: WAIT });
  await page.locator('#components-table tr[data-component="aws.greengrass.Cli"]').waitFor({ timeout: WAIT });
  await page.locator(`#devices-table tr[data-device="${device}"]`).waitFor({ timeout: WAIT });
  check(await page.locator('#core-deployments-table tbody tr').count() >= 2, 'both deployments are listed');
  check(await page.locator('#effective-table tbody tr').count() >= 1, 'an effective deployment is listed');
  check((await page.locator('#core-facts').innerText()).includes(`${template} v2`), 'the reported template is v2');
  await shot('05-core');
  log('core detail');

  // 7. Patch tasks: the task the test made is opened by its id; its one
  // patch (to a device without a target profile) ends failed on the page.
  await page.click('nav a[data-nav=patches]');
  await page.fill('#patch-lookup input[name=task]', patchTask);
  await page.click('#patch-lookup button[type=submit]');
  await page.locator('#patches-table tr[data-status="failed"]').waitFor({ timeout: WAIT });
  check((await page.locator('#patch-task .progress').getAttribute('data-done')) === '1', 'the patch task shows 1 of 1 done');
  check((await page.locator(`#patches-table tr[data-status="failed"]`).innerText()).includes(device), 'the patch names the device');
  await shot('06-patches');
  log('patch task');

  // 8. Log out: the cookie is gone and the API refuses the page.
  await Promise.all([page.waitForURL(/\/ui\/login/, { timeout: WAIT }), page.click('#logout')]);
  check(!(await context.cookies()).some((c) => c.name === 'ggfleet_session'), 'the cookie is cleared');
  const status = await page.evaluate(async () => (await fetch('/fleet/summary')).status);
  check(status === 401, `after logout the API answers 401, got ${status}`);
  log('logged out');

  check(problems.length === 0, `no script errors or CSP violations:\n${problems.join('\n')}`);
  log('PASS');
} catch (e) {
  await page.screenshot({ path: path.join(outDir, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`[ui] FAIL: ${e.stack || e}`);
  if (problems.length) console.error(`[ui] page problems:\n${problems.join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
