// The status page of one association: its connection to Constant Contact, each
// group's sync with the reason behind every error, why lists are smaller than
// groups, and what happened. Plain DOM, no framework; every request goes to
// this page's own origin with the token in the Authorization header only.
'use strict';

const REFRESH_MS = 10000;

const REMEDIES = {
  list_deleted_in_constant_contact:
    'ccsync does not recreate a deleted list on its own. Press Resync to make a new list ' +
    'with the group\'s members, or turn the group\'s sync off in Novi.',
  constant_contact_unauthorized:
    'Constant Contact no longer accepts this association\'s connection. Reconnect ' +
    'Constant Contact in Novi; syncing resumes by itself.',
  constant_contact_quota_exhausted:
    'Constant Contact\'s daily request limit is used up. Syncing resumes by itself at ' +
    '00:00 UTC; nothing is lost meanwhile.',
  list_limit_reached:
    'The Constant Contact account holds the most lists it may (1,000). Delete lists you ' +
    'no longer need in Constant Contact, then press Resync.',
};

const REASONS = [
  ['no_email', 'No email address'],
  ['invalid_email', 'Email address not valid'],
  ['duplicate_email', 'Email shared with another member'],
  ['do_not_email', '"Do not send marketing emails" is set'],
  ['unsubscribed', 'Unsubscribed in Constant Contact'],
  ['rejected', 'Rejected by Constant Contact'],
];

const state = { association: '', token: '', scope: 'read', timer: 0, etag: '', selected: '' };

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function when(iso) {
  if (!iso) return 'never';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: 'Bearer ' + state.token }, options.headers || {});
  let res;
  try {
    res = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  } catch (e) {
    throw new ApiError(0, 'ccsync cannot be reached. Check your connection; the page tries again by itself.');
  }
  if (res.status === 304) return { notModified: true, res };
  let body = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) body = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, explain(res.status, body));
  return { body, res };
}

function explain(status, body) {
  if (status === 401)
    return 'This token was not accepted: it is wrong, or it was revoked. Ask your ccsync operator for a new one.';
  if (status === 404)
    return 'This token does not open that association: the association name is wrong, or the token ' +
      'was revoked or belongs to another association. Ask your ccsync operator for a new one.';
  if (status === 403) return 'This token may only read. Ask for a write token to change anything.';
  if (status === 503) return 'ccsync is briefly unavailable; the page tries again by itself.';
  const msg = body && body.error && body.error.message;
  return msg ? msg : 'ccsync answered ' + status + '.';
}

function baseUrl() {
  return '/v1/associations/' + encodeURIComponent(state.association);
}

// ---- signing in: the token comes from the form or the URL fragment ----

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get('association') && params.get('token')) {
    sessionStorage.setItem('ccsync.association', params.get('association'));
    sessionStorage.setItem('ccsync.token', params.get('token'));
    history.replaceState(null, '', location.pathname); // keep the token out of the address bar
  }
  state.association = sessionStorage.getItem('ccsync.association') || '';
  state.token = sessionStorage.getItem('ccsync.token') || '';
}

function showSignin(message) {
  clearTimeout(state.timer);
  $('status').hidden = true;
  $('signin').hidden = false;
  $('signin-message').textContent = message || '';
  $('association').value = state.association;
  $('connection').textContent = '';
}

function signout() {
  sessionStorage.removeItem('ccsync.token');
  state.token = '';
  showSignin('');
}

// ---- the connection ----

function renderConnection(view) {
  const cc = view.constant_contact || {};
  const p = $('connection');
  p.className = 'connection';
  if (cc.state === 'connected') {
    p.textContent = view.association_id + ': connected to Constant Contact.';
  } else if (cc.state === 'unauthorized') {
    p.className = 'connection bad';
    p.textContent = view.association_id + ': Constant Contact refused the connection. ' +
      REMEDIES.constant_contact_unauthorized;
  } else {
    p.textContent = view.association_id + ': Constant Contact connection ' +
      (cc.state || 'unknown').replace(/_/g, ' ') + '.';
  }
  state.scope = view.access === 'write' || view.access === 'operator' ? 'write' : 'read';
}

// ---- groups ----

function stateCell(g) {
  const td = el('td', { className: 'state state-' + g.state });
  td.dataset.label = 'State';
  let label = g.state;
  if (g.state === 'pending' && g.waiting_for === 'budget') label = 'waiting for Constant Contact\'s budget';
  if (g.state !== 'error') td.append(el('span', { className: 'dot', ariaHidden: 'true' }, '\u25CF '));
  td.append(label);
  if (g.state === 'error' && g.error) td.append(errorTip(g));
  return td;
}

// The error icon: its tooltip opens on hover and on keyboard focus, and is the
// button's description for screen readers.
function errorTip(g) {
  const wrap = $('tip-template').content.firstElementChild.cloneNode(true);
  const button = wrap.querySelector('button');
  const tip = wrap.querySelector('.tip');
  tip.id = 'tip-' + g.group_id.replace(/[^A-Za-z0-9_-]/g, '_');
  button.setAttribute('aria-describedby', tip.id);
  button.setAttribute('aria-label', 'Error in ' + g.group_name);
  const listName = g.list && g.list.name ? '\u201C' + g.list.name + '\u201D' : 'its list';
  const what = g.error.code === 'list_deleted_in_constant_contact'
    ? 'The list ' + listName + ' was deleted in Constant Contact.'
    : g.error.message || g.error.code;
  tip.append(el('strong', {}, what + ' '));
  // (a deleted list's message says what the remedy below says)
  if (g.error.message && g.error.message !== what && g.error.code !== 'list_deleted_in_constant_contact')
    tip.append(el('span', {}, g.error.message + ' '));
  tip.append(el('span', {}, 'Since ' + when(g.error.since) + '. '));
  tip.append(el('span', {}, REMEDIES[g.error.code] || ''));
  button.addEventListener('keydown', (e) => { if (e.key === 'Escape') button.blur(); });
  return wrap;
}

function numberCell(label, value) {
  const td = el('td', { className: 'num' }, String(value === undefined ? '' : value));
  td.dataset.label = label;
  return td;
}

function groupRow(g) {
  const counts = g.counts || {};
  const name = el('td', {}, el('button', { className: 'reasons-link', type: 'button' }, g.group_name || g.group_id));
  name.dataset.label = 'Group';
  name.firstChild.addEventListener('click', () => showDetail(g));
  if (!g.sync_enabled) name.append(el('span', { className: 'muted' }, ' (sync off)'));
  const list = el('td', {}, g.list && g.list.name ? g.list.name : '\u2014');
  list.dataset.label = 'List';
  const actions = el('td');
  if (state.scope === 'write' && g.sync_enabled) {
    const b = el('button', { type: 'button' }, 'Resync');
    b.setAttribute('aria-label', 'Resync ' + (g.group_name || g.group_id));
    b.addEventListener('click', () => resync(g, b));
    actions.append(b);
  }
  const tr = el('tr', {}, name, list, stateCell(g), numberCell('Members', counts.members),
    numberCell('On the list', counts.in_list), actions);
  if (g.group_id === state.selected) tr.className = 'selected';
  return tr;
}

function renderGroups(groups) {
  const tbody = $('groups').tBodies[0];
  tbody.replaceChildren(...groups.map(groupRow));
  $('no-groups').hidden = groups.length > 0;
  const selected = groups.find((g) => g.group_id === state.selected);
  if (selected) showDetail(selected, true);
}

async function resync(g, button) {
  button.disabled = true;
  try {
    await api(baseUrl() + '/groups/' + encodeURIComponent(g.group_id) + '/resync', { method: 'POST' });
    state.etag = '';
    await refresh();
  } catch (e) {
    alertError(e);
  } finally {
    button.disabled = false;
  }
}

// ---- why the list is smaller than the group ----

function showDetail(g, keepMembers) {
  state.selected = g.group_id;
  const counts = g.counts || {};
  $('detail').hidden = false;
  $('detail-title').textContent = g.group_name || g.group_id;
  $('detail-summary').textContent = (counts.members || 0) + ' members, ' + (counts.in_list || 0) +
    ' on the list' + (g.pending_changes ? ', ' + g.pending_changes + ' changes waiting' : '') +
    '. Last synced ' + when(g.last_synced_at) + '.';
  // Every count opens the members behind it; the reasons add up to the group.
  const link = (status, label, n) => {
    const b = el('button', { type: 'button', className: 'reasons-link' }, label + ': ' + n);
    b.addEventListener('click', () => showMembers(g, status, label));
    return el('li', {}, b);
  };
  const items = [link('', 'All members', counts.members || 0),
    link('in_list,pending', 'On the list' + (g.pending_changes ? ' or on their way' : ''), counts.in_list || 0)];
  for (const [key, label] of REASONS) {
    const n = counts[key] || 0;
    if (n) items.push(link(key, label, n));
  }
  if (items.length === 2) items.push(el('li', { className: 'muted' }, 'Every member with a usable email is on the list.'));
  $('reasons').replaceChildren(...items);
  if (!keepMembers) $('members').hidden = true;
}

const STATUS_WORDS = {
  in_list: 'on the list', pending: 'on its way to the list', no_email: 'no email',
  invalid_email: 'invalid email', duplicate_email: 'duplicate email', do_not_email: 'do not email',
  unsubscribed: 'unsubscribed', rejected: 'rejected',
};

function memberItem(m) {
  const li = el('li', { className: 'member' }, el('strong', {}, m.name || m.unique_id),
    m.email ? ' \u2014 ' + m.email : '', ' ', el('span', { className: 'badge status-' + m.status },
      STATUS_WORDS[m.status] || m.status));
  li.dataset.status = m.status;
  if (m.detail || m.duplicate_of) {
    li.append(el('span', { className: 'muted' }, ' (' + (m.detail || '') +
      (m.duplicate_of ? (m.detail ? '; ' : '') + 'kept for ' + m.duplicate_of : '') + ')'));
  }
  return li;
}

async function showMembers(g, status, label, cursor) {
  const q = '?limit=50' + (status ? '&status=' + status : '') + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
  const path = baseUrl() + '/groups/' + encodeURIComponent(g.group_id) + '/members' + q;
  $('members').hidden = false;
  $('members-title').textContent = label;
  try {
    const { body } = await api(path);
    const rows = (body.members || []).map(memberItem);
    if (cursor) $('member-list').append(...rows); else $('member-list').replaceChildren(...rows);
    const more = $('members-more');
    more.hidden = !body.next_cursor;
    more.onclick = () => showMembers(g, status, label, body.next_cursor);
    $('members-csv').onclick = (e) => { e.preventDefault(); downloadCsv(g, status); };
  } catch (e) {
    $('member-list').replaceChildren(el('li', { className: 'message' }, e.message));
  }
}

async function downloadCsv(g, status) {
  // Without a limit the CSV holds every member of the status: the whole report.
  const path = baseUrl() + '/groups/' + encodeURIComponent(g.group_id) + '/members' + (status ? '?status=' + status : '');
  const res = await fetch(path, { headers: { Authorization: 'Bearer ' + state.token, Accept: 'text/csv' } });
  const url = URL.createObjectURL(await res.blob());
  const a = el('a', { href: url, download: g.group_id + '-' + (status || 'members').replace(/,/g, '-') + '.csv' });
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

// ---- what happened ----

function renderAudit(entries) {
  const items = entries.map((e) => el('li', {}, el('time', { dateTime: e.at }, when(e.at)), ' \u2014 ',
    (e.action || '').replace(/_/g, ' '), e.list_name ? ': ' + e.list_name : '', e.detail ? ' (' + e.detail + ')' : ''));
  if (!items.length) items.push(el('li', { className: 'muted' }, 'Nothing yet.'));
  $('audit').replaceChildren(...items);
}

// ---- refreshing ----

function alertError(e) {
  if (e.status === 401 || e.status === 404) {
    showSignin(e.message);
  } else {
    $('refreshed').textContent = e.message;
  }
}

// Opening the page asks for a reconcile, so a list deleted or renamed in Constant
// Contact shows within 2 minutes. ccsync takes one ask a minute per association
// (a second one is answered by the standing ask), and a read token may ask.
function askReconcile() {
  api(baseUrl() + '/reconcile', { method: 'POST' }).catch(() => {});
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const assoc = await api(baseUrl());
    renderConnection(assoc.body);
    const groups = await api(baseUrl() + '/groups', { headers: state.etag ? { 'If-None-Match': state.etag } : {} });
    if (!groups.notModified) {
      state.etag = groups.res.headers.get('ETag') || '';
      renderGroups(groups.body.groups || []);
      const audit = await api(baseUrl() + '/audit?limit=20');
      renderAudit(audit.body.entries || []);
    }
    $('signin').hidden = true;
    $('status').hidden = false;
    $('refreshed').textContent = 'Updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    alertError(e);
    if (e.status === 401 || e.status === 404) return;
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.token) refresh();
  else clearTimeout(state.timer);
});

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.association = $('association').value.trim();
    state.token = $('token').value.trim();
    sessionStorage.setItem('ccsync.association', state.association);
    sessionStorage.setItem('ccsync.token', state.token);
    $('token').value = '';
    state.etag = '';
    askReconcile();
    refresh();
  });
  $('signout').addEventListener('click', signout);
  readFragment();
  if (state.association && state.token) {
    askReconcile();
    refresh();
  }
  else showSignin(state.association ? 'Enter your token.' : '');
});
