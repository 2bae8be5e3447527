// The status page in a real browser: Debian's chromium, headless, driven by
// puppeteer-core, against a running ccsyncd + Redis + ccsim (tests/browser/check.sh
// starts them with scripts/run-dev.sh and passes their addresses in the environment).
//
// The story: two groups sync, the list of one is deleted in Constant Contact. With a
// read token the page shows the error icon for that group only; its tooltip names the
// deleted list and the resync remedy on hover and on keyboard focus (aria-describedby);
// there is no Resync button; the member view opens behind a count; the page fits 390 px.
// With a write token Resync works and the icon clears. A wrong or missing token gets a
// clear message. No console error and no request outside ccsyncd's origin, ever.
// Screenshots go to $ARTIFACTS. Prints one line a check, then "browser: N passed, M failed".
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const env = process.env;
const BASE = env.CCSYNC_URL;
const ASSOC = env.CCSYNC_ASSOCIATION;
const ADMIN = env.CCSYNC_ADMIN_TOKEN;
const SIM = env.SIM_URL;
const ARTIFACTS = env.ARTIFACTS || 'build/test-artifacts';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 60000;

let passed = 0;
let failed = 0;

function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log('ok   - ' + name);
  } else {
    failed++;
    console.log('FAIL - ' + name + (detail ? ': ' + detail : ''));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, fn, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(200);
  }
}

async function api(method, p, body, token = ADMIN) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// A Novi webhook, signed as Standard Webhooks says.
let sent = 0;
async function webhook(type, data) {
  const id = 'msg_browser_' + process.pid + '_' + ++sent;
  const ts = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({ type, timestamp: new Date(Date.now() + sent).toISOString(), data });
  const key = Buffer.from(env.CCSYNC_WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
  const sig = crypto.createHmac('sha256', key).update(id + '.' + ts + '.' + body).digest('base64');
  const res = await fetch(BASE + '/v1/associations/' + ASSOC + '/webhooks/novi', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(ts),
      'webhook-signature': 'v1,' + sig },
    body,
  });
  if (res.status !== 202) throw new Error(type + ' answered ' + res.status);
}

const group = async (g) => (await api('GET', '/v1/associations/' + ASSOC + '/groups/' + g)).body;
const settled = (gs) => gs && gs.state === 'synced' && gs.pending_changes === 0 && !gs.changes_queued;

async function theStory() {
  const groups = { Board: 'board', Staff: 'staff' };
  for (const [name, id] of Object.entries(groups))
    await webhook('group.updated', { UniqueID: id, GroupName: name, SyncToConstantContact: true });
  await webhook('group.members', { UniqueID: 'board', Members: [
    { UniqueID: 'b1', Email: 'ann@example.org', FirstName: 'Ann', LastName: 'Lee' },
    { UniqueID: 'b2', Email: 'bob@example.org', FirstName: 'Bob', LastName: 'Ray' },
    { UniqueID: 'b3', FirstName: 'Fay', LastName: 'Noemail' }] });
  await webhook('group.members', { UniqueID: 'staff', Members: [
    { UniqueID: 's1', Email: 'cy@example.org', FirstName: 'Cy', LastName: 'Lo' }] });
  await waitFor('both groups synced', async () => settled(await group('board')) && settled(await group('staff')));
  const listId = (await group('board')).list.list_id;
  const res = await fetch(SIM + '/__sim/lists/' + listId + '/delete', { method: 'POST' });
  if (res.status !== 200) throw new Error('ccsim did not delete the list: ' + res.status);
  await waitFor('board in error', async () => {
    const gs = await group('board');
    return gs.state === 'error' && gs.error && gs.error.code === 'list_deleted_in_constant_contact';
  });
}

async function newToken(scope) {
  const r = await api('POST', '/v1/associations/' + ASSOC + '/tokens', { scope, name: 'browser test ' + scope });
  if (r.status !== 201) throw new Error('token: ' + r.status);
  return r.body.token;
}

// A fresh browser context whose console errors and outside requests are recorded.
async function openPage(browser, fragment, width = 1280, height = 800) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => page.problems.push('page error: ' + e.message));
  page.on('request', (r) => {
    if (!r.url().startsWith(BASE + '/')) page.problems.push('outside request: ' + r.url());
  });
  await page.setViewport({ width, height });
  await page.goto(BASE + '/ui/' + fragment, { waitUntil: 'load' });
  return page;
}

const rows = (page) => page.$$eval('#groups tbody tr', (trs) => trs.map((tr) => ({
  text: tr.textContent,
  error: !!tr.querySelector('.error-icon'),
  synced: !!tr.querySelector('.state-synced .dot'),
  resync: [...tr.querySelectorAll('button')].some((b) => b.textContent === 'Resync'),
})));

const tipVisible = (page) => page.$eval('.error-icon', (b) => {
  const tip = document.getElementById(b.getAttribute('aria-describedby'));
  // shown, and every line of it inside its box (white text past the box is invisible)
  const shown = tip && getComputedStyle(tip).display !== 'none' && tip.getBoundingClientRect().width > 0;
  if (!shown) return '';
  const box = tip.getBoundingClientRect();
  const range = document.createRange();
  range.selectNodeContents(tip);
  const inside = [...range.getClientRects()].every((r) => r.right <= box.right + 1 && r.bottom <= box.bottom + 1);
  return inside ? tip.textContent : 'overflowing: ' + tip.textContent;
});

async function readTokenChecks(browser, token) {
  const page = await openPage(browser, '#association=' + ASSOC + '&token=' + token);
  await page.waitForFunction(() => document.querySelectorAll('#groups tbody tr').length === 2, { timeout: WAIT_MS });
  const list = await rows(page);
  const board = list.find((r) => r.text.includes('Board'));
  const staff = list.find((r) => r.text.includes('Staff'));
  check('the group list shows both groups with a state icon', board && staff && staff.synced);
  check('the error icon is shown for the group in error only', board.error && !staff.error &&
    (await page.$$('.error-icon')).length === 1);
  check('no Resync button with a read token', !list.some((r) => r.resync));
  check('the token left the address bar', !(await page.evaluate(() => location.href)).includes(token));

  const tipId = await page.$eval('.error-icon', (b) => b.getAttribute('aria-describedby'));
  const role = await page.$eval('.error-icon', (b) => {
    const t = document.getElementById(b.getAttribute('aria-describedby'));
    return t ? t.getAttribute('role') : null;
  });
  check('the tooltip is the icon\'s aria-describedby, role tooltip', !!tipId && role === 'tooltip');
  check('the tooltip is hidden until asked for', (await tipVisible(page)) === '');
  await page.hover('.error-icon');
  const hovered = await tipVisible(page);
  check('hovering the icon shows the deleted list and the resync remedy',
    !hovered.startsWith('overflowing') &&
    hovered.includes('\u201CBoard\u201D was deleted in Constant Contact') && hovered.includes('Resync') &&
    hovered.includes('Since'), JSON.stringify(hovered));
  await page.mouse.move(5, 5);
  check('the tooltip goes when the pointer leaves', (await tipVisible(page)) === '');
  let focused = false;
  for (let i = 0; i < 40 && !focused; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement && document.activeElement.classList.contains('error-icon'));
  }
  const byKeyboard = focused ? await tipVisible(page) : '';
  check('focusing the icon by keyboard shows the same tooltip', focused && byKeyboard === hovered,
    JSON.stringify(byKeyboard));
  await page.screenshot({ path: path.join(ARTIFACTS, 'status-page-1280x800.png') });

  // the member view, behind a count of the breakdown
  await page.evaluate(() => [...document.querySelectorAll('#groups .reasons-link')]
    .find((b) => b.textContent === 'Board').click());
  await page.waitForSelector('#detail:not([hidden])');
  await page.evaluate(() => [...document.querySelectorAll('#reasons button')]
    .find((b) => b.textContent.startsWith('No email address: 1')).click());
  await page.waitForFunction(() => document.querySelectorAll('#member-list li').length > 0, { timeout: WAIT_MS });
  const members = await page.$$eval('#member-list li', (lis) => lis.map((li) => li.textContent));
  check('the member view opens the members behind a count', members.length === 1 &&
    members[0].includes('Fay Noemail') && members[0].includes('no email'), JSON.stringify(members));
  const breakdown = await page.$$eval('#reasons button', (bs) => bs.map((b) => b.textContent));
  check('every count of the breakdown opens its members, and they add up',
    breakdown.includes('All members: 3') && breakdown.some((t) => t.startsWith('On the list or on their way: 2')) &&
    breakdown.includes('No email address: 1'), JSON.stringify(breakdown));

  await page.setViewport({ width: 390, height: 844 });
  await sleep(300);
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > 390 && getComputedStyle(e).display !== 'none')
    .map((e) => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)));
  const fits = await page.evaluate(() => document.documentElement.scrollWidth <= 390);
  const iconShown = await page.$eval('.error-icon', (b) => b.getBoundingClientRect().right <= 390);
  check('the page fits 390 px without sideways scrolling', fits && iconShown, wide.slice(0, 5).join('; '));
  await page.hover('.error-icon');
  const tipInside = await page.$eval('.error-icon', (b) => {
    const r = document.getElementById(b.getAttribute('aria-describedby')).getBoundingClientRect();
    return { ok: r.left >= 0 && r.right <= 390, left: r.left, right: r.right };
  });
  check('at 390 px the tooltip stays on the screen', tipInside.ok, JSON.stringify(tipInside));
  await page.screenshot({ path: path.join(ARTIFACTS, 'status-page-390x844.png'), fullPage: true });
  check('no console error and no request outside ccsyncd (read token)', page.problems.length === 0,
    page.problems.join('; '));
  await page.browserContext().close();
}

// The page refreshes its list by itself: a button found just before a refresh is
// gone from the document when the click comes ("not clickable", thrown before any
// click is sent). Find it again, a few times.
async function clickFresh(page, selector) {
  for (let i = 0; ; i++) {
    try {
      await page.click(selector);
      return;
    } catch (e) {
      if (i >= 20 || !/not clickable|detached|No node found/i.test(String(e))) throw e;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function writeTokenChecks(browser, token) {
  const page = await openPage(browser, '#association=' + ASSOC + '&token=' + token);
  await page.waitForFunction(() => document.querySelectorAll('#groups tbody tr').length === 2, { timeout: WAIT_MS });
  const list = await rows(page);
  check('a write token gets a Resync button for each group', list.every((r) => r.resync));
  await clickFresh(page, 'button[aria-label="Resync Board"]');
  await page.waitForFunction(() => document.querySelectorAll('.error-icon').length === 0, { timeout: WAIT_MS });
  await waitFor('board synced again', async () => settled(await group('board')));
  check('Resync clears the error icon and the group syncs a new list', true);
  check('no console error and no request outside ccsyncd (write token)', page.problems.length === 0,
    page.problems.join('; '));
  await page.browserContext().close();
}

async function tokenMessages(browser) {
  let page = await openPage(browser, '#association=' + ASSOC + '&token=ccs_wrong_token');
  await page.waitForSelector('#signin:not([hidden])', { timeout: WAIT_MS });
  const message = await page.$eval('#signin-message', (p) => p.textContent);
  check('a wrong token shows a clear message', message.includes('was not accepted'), message);
  const problems = page.problems.filter((p) => !p.includes('401'));
  check('a wrong token causes no console error but the refused request', problems.length === 0, problems.join('; '));
  await page.browserContext().close();
  page = await openPage(browser, '');
  await page.waitForSelector('#signin:not([hidden])', { timeout: WAIT_MS });
  const form = await page.$('#token');
  check('without a token the page asks for one', !!form && (await page.$$('#groups tbody tr')).length === 0);
  check('no console error and no request outside ccsyncd (no token)', page.problems.length === 0,
    page.problems.join('; '));
  await page.browserContext().close();
}

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await theStory();
  const read = await newToken('read');
  const write = await newToken('write');
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // --no-sandbox: the suite may run as root, where chromium's sandbox cannot start
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  try {
    await readTokenChecks(browser, read);
    await writeTokenChecks(browser, write);
    await tokenMessages(browser);
  } finally {
    await browser.close();
  }
}

main().catch((e) => check('the story ran to its end', false, e.stack || String(e))).finally(() => {
  console.log('browser: ' + passed + ' passed, ' + failed + ' failed');
  process.exitCode = failed ? 1 : 0;
});
