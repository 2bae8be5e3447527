// Contract test driver: sends every request ccsim simulates through Prism (proxy mode,
// the official Constant Contact OpenAPI document) and checks Prism's verdict, which it
// reports in the sl-violations response header.
//
// A step fails when:
//  - the status is not the one expected (the simulator's behaviour), or
//  - Prism reports a violation that is not one of the document's known gaps
//    (cc-openapi/README.md), or
//  - a step that deliberately sends what the document forbids (expectRequestViolation)
//    gets no request violation: then the document and the simulator disagree.
//
// usage: node drive.mjs PRISM_URL SIM_URL
const [prism, sim] = process.argv.slice(2);
let token = '';
let passed = 0;
let failed = 0;
const gapsSeen = new Map();

// The known gaps of the published document (see its README).
function knownGap(step, v, status) {
  const loc = (v.location || []).join('.');
  if ((loc === 'request.query.status' || loc === 'request.query.include') && v.code === 'enum') {
    const value = new URL(step.url, 'http://x').searchParams.get(v.location[2]) || '';
    if (value.includes(',')) return 'include= and status= take comma-separated values';
  }
  if (loc === 'response' && /Unable to match the returned status code/.test(v.message)) {
    const route = `${step.method} ${step.route}`;
    if (status === 429 && (route === 'GET /contacts' || route === 'GET /contact_lists'))
      return '429 is not declared on GET /contacts and GET /contact_lists';
    if (status === 409 && route === 'PUT /contact_lists/{list_id}')
      return '409 is not declared on PUT /contact_lists/{list_id}';
  }
  return null;
}

async function call(step) {
  const headers = {};
  if (step.auth !== false) headers.Authorization = `Bearer ${token}`;
  let body;
  if (step.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = typeof step.body === 'string' ? step.body : JSON.stringify(step.body);
  }
  const res = await fetch(prism + step.url, { method: step.method, headers, body });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  let violations = [];
  const header = res.headers.get('sl-violations');
  if (header) violations = JSON.parse(header);
  return { status: res.status, json, violations, headers: res.headers };
}

// Runs one step; returns the parsed body.
async function step(s) {
  s.route = s.route || s.url.split('?')[0];
  const r = await call(s);
  const problems = [];
  const expected = Array.isArray(s.expect) ? s.expect : [s.expect];
  if (!expected.includes(r.status)) problems.push(`status ${r.status}, expected ${expected.join('|')}`);
  let requestViolations = 0;
  for (const v of r.violations) {
    const gap = knownGap(s, v, r.status);
    if (gap) {
      gapsSeen.set(gap, (gapsSeen.get(gap) || 0) + 1);
      continue;
    }
    const isRequest = (v.location || [])[0] === 'request';
    if (isRequest && s.expectRequestViolation) {
      requestViolations++;
      continue;
    }
    problems.push(`violation ${JSON.stringify(v)}`);
  }
  if (s.expectRequestViolation && requestViolations === 0)
    problems.push('the document forbids this request but Prism saw no request violation');
  if (s.check) {
    try {
      s.check(r.json, r);
    } catch (e) {
      problems.push(`check: ${e.message}`);
    }
  }
  const name = `${s.method} ${s.url.length > 90 ? s.url.slice(0, 90) + '…' : s.url}`;
  if (problems.length === 0) {
    passed++;
    console.log(`ok    ${r.status} ${name}`);
  } else {
    failed++;
    console.log(`FAIL  ${r.status} ${name}\n      ${problems.join('\n      ')}`);
    if (r.json) console.log(`      body: ${JSON.stringify(r.json).slice(0, 400)}`);
  }
  return r.json;
}

async function control(method, path, body) {
  const res = await fetch(`${sim}/__sim${path}`, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return res.json();
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitActivity(id) {
  for (let i = 0; i < 100; i++) {
    const a = await step({ method: 'GET', url: `/activities/${id}`, route: '/activities/{activity_id}', expect: 200 });
    if (a && a.state === 'completed') return a;
    await sleep(50);
  }
  throw new Error(`activity ${id} did not complete`);
}

const LISTS = '/contact_lists';
const LIST = '/contact_lists/{list_id}';
const CONTACT = '/contacts/{contact_id}';
const UNKNOWN = '0b8b4f6e-2a43-4d5e-9f11-7c3e6a1d2b90';

async function main() {
  await control('POST', '/reset');
  await control('POST', '/config', { rate: 0, daily_limit: 0, activity_ms: 100, auth: true });
  token = (await control('POST', '/tokens')).access_token;

  // ---- contact lists ----
  await step({ method: 'GET', url: LISTS, expect: 200, check: (j) => assert(j.lists.length === 0, 'no lists yet') });
  const a = await step({ method: 'POST', url: LISTS, body: { name: 'Alpha', description: 'first', favorite: true }, expect: 201 });
  const b = await step({ method: 'POST', url: LISTS, body: { name: 'Beta' }, expect: 201 });
  const c = await step({ method: 'POST', url: LISTS, body: { name: 'Gamma' }, expect: 201 });
  await step({ method: 'POST', url: LISTS, body: { name: 'Alpha' }, expect: 409, check: (j) => assert(Array.isArray(j), 'array body') });
  await step({ method: 'POST', url: LISTS, body: { description: 'no name' }, expect: 400, expectRequestViolation: true });
  const page1 = await step({ method: 'GET', url: `${LISTS}?limit=2`, expect: 200, check: (j) => assert(j._links.next.href.startsWith('/v3/contact_lists?cursor='), 'next link') });
  await step({ method: 'GET', url: page1._links.next.href.replace(/^\/v3/, ''), route: LISTS, expect: 200, check: (j) => assert(j.lists.length === 1 && !j._links, 'last page') });
  await step({ method: 'GET', url: `${LISTS}?include_membership_count=all&include_count=true&limit=500`, expect: 200, check: (j) => assert(j.lists_count === 3, 'lists_count') });
  await step({ method: 'GET', url: `${LISTS}?name=Beta&status=active`, expect: 200, check: (j) => assert(j.lists.length === 1, 'by name') });
  await step({ method: 'GET', url: `${LISTS}?limit=1001`, expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: `${LISTS}/${a.list_id}?include_membership_count=active`, route: LIST, expect: 200 });
  await step({ method: 'GET', url: `${LISTS}/${UNKNOWN}`, route: LIST, expect: 404 });
  await step({ method: 'PUT', url: `${LISTS}/${b.list_id}`, route: LIST, body: { name: 'Beta renamed', description: 'd' }, expect: 200 });
  await step({ method: 'PUT', url: `${LISTS}/${b.list_id}`, route: LIST, body: { name: 'Alpha' }, expect: 409 });
  await step({ method: 'PUT', url: `${LISTS}/${UNKNOWN}`, route: LIST, body: { name: 'Nobody' }, expect: 404 });

  // ---- contacts ----
  const ann = await step({
    method: 'POST', url: '/contacts', expect: 201,
    body: { email_address: { address: 'ann@example.org', permission_to_send: 'implicit' }, first_name: 'Ann', last_name: 'Lee', create_source: 'Account', list_memberships: [a.list_id] },
  });
  const bob = await step({ method: 'POST', url: '/contacts', expect: 201, body: { email_address: { address: 'bob@example.org' }, first_name: 'Bob', create_source: 'Account' } });
  await step({ method: 'POST', url: '/contacts', expect: 409, body: { email_address: { address: 'ann@example.org' }, create_source: 'Account' } });
  await step({ method: 'POST', url: '/contacts', expect: 400, body: { email_address: { address: 'not-an-address' }, create_source: 'Account' } });
  await step({ method: 'GET', url: '/contacts', expect: 200, check: (j) => assert(j.contacts.length === 2, 'two contacts') });
  await step({ method: 'GET', url: '/contacts?email=ann@example.org&status=all&include=list_memberships', expect: 200, check: (j) => assert(j.contacts[0].list_memberships[0] === a.list_id, 'membership') });
  await step({ method: 'GET', url: `/contacts?lists=${a.list_id},${c.list_id}&include=list_memberships,custom_fields`, expect: 200, check: (j) => assert(j.contacts.length === 1, 'by list') });
  await step({ method: 'GET', url: '/contacts?status=all,deleted', expect: 200 });
  await step({ method: 'GET', url: '/contacts?updated_after=2020-01-01T00:00:00Z&include_count=true', expect: 200, check: (j) => assert(j.contacts_count === 2, 'count') });
  const cpage = await step({ method: 'GET', url: '/contacts?limit=1', expect: 200 });
  await step({ method: 'GET', url: cpage._links.next.href.replace(/^\/v3/, ''), route: '/contacts', expect: 200, check: (j) => assert(!j._links, 'last page') });
  await step({ method: 'GET', url: '/contacts?limit=501', expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: '/contacts?updated_after=last-week', expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: `/contacts/${ann.contact_id}?include=list_memberships`, route: CONTACT, expect: 200 });
  await step({ method: 'PUT', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 200, body: { email_address: { address: 'bob@example.org' }, first_name: 'Robert', update_source: 'Account' } });
  await step({ method: 'PUT', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 409, body: { email_address: { address: 'ann@example.org' }, update_source: 'Account' } });
  await step({ method: 'PUT', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 400, expectRequestViolation: true, body: { first_name: 'No source' } });
  await step({ method: 'DELETE', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 204 });
  await step({ method: 'GET', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 404 });
  await step({ method: 'DELETE', url: `/contacts/${bob.contact_id}`, route: CONTACT, expect: 404 });
  await step({ method: 'GET', url: '/contacts?status=deleted', expect: 200, check: (j) => assert(j.contacts.length === 1 && j.contacts[0].deleted_at, 'deleted listed') });

  // ---- activities ----
  const imp = await step({
    method: 'POST', url: '/activities/contacts_json_import', expect: 201,
    body: { import_data: [{ email: 'imp1@example.org', first_name: 'Imp', last_name: 'One' }, { email: 'broken.example.org' }], list_ids: [a.list_id, c.list_id] },
  });
  await step({ method: 'GET', url: `/activities/${imp.activity_id}`, route: '/activities/{activity_id}', expect: 200 });
  const impDone = await waitActivity(imp.activity_id);
  assert(impDone.status.error_count === 1 && impDone.activity_errors.length === 1, 'import errors');
  await step({ method: 'POST', url: '/activities/contacts_json_import', expect: 400, expectRequestViolation: true, body: { import_data: [{ email: 'x@example.org' }], list_ids: [] } });
  await step({ method: 'POST', url: '/activities/contacts_json_import', expect: 400, expectRequestViolation: true, body: { import_data: [{ email: 'x@example.org' }] } });
  const add = await step({ method: 'POST', url: '/activities/add_list_memberships', expect: 201, body: { source: { contact_ids: [ann.contact_id] }, list_ids: [b.list_id] } });
  await waitActivity(add.activity_id);
  await step({ method: 'POST', url: '/activities/add_list_memberships', expect: 400, expectRequestViolation: true, body: { source: { contact_ids: Array(501).fill(ann.contact_id) }, list_ids: [b.list_id] } });
  const rem = await step({ method: 'POST', url: '/activities/remove_list_memberships', expect: 201, body: { source: { contact_ids: [ann.contact_id] }, list_ids: [b.list_id] } });
  await waitActivity(rem.activity_id);
  await step({ method: 'POST', url: '/activities/remove_list_memberships', expect: 404, body: { source: { contact_ids: [ann.contact_id] }, list_ids: [UNKNOWN] } });
  const del = await step({ method: 'DELETE', url: `${LISTS}/${c.list_id}`, route: LIST, expect: 202 });
  await waitActivity(del.activity_id);
  await step({ method: 'GET', url: `${LISTS}/${c.list_id}`, route: LIST, expect: 404 });
  await step({ method: 'GET', url: `${LISTS}?status=active,deleted`, expect: 200, check: (j) => assert(j.lists.length === 3, 'active and deleted') });
  await step({ method: 'GET', url: `${LISTS}?status=deleted`, expect: 200, check: (j) => assert(j.lists.length === 1 && j.lists[0].deleted_at, 'deleted list') });
  const bulk = await step({ method: 'POST', url: '/activities/list_delete', expect: 201, body: { list_ids: [b.list_id] } });
  await waitActivity(bulk.activity_id);
  const acts = await step({ method: 'GET', url: '/activities?limit=2', expect: 200 });
  await step({ method: 'GET', url: acts._links.next.href.replace(/^\/v3/, ''), route: '/activities', expect: 200 });
  await step({ method: 'GET', url: '/activities?state=completed&limit=500', expect: 200 });
  await step({ method: 'GET', url: `/activities/${UNKNOWN}`, route: '/activities/{activity_id}', expect: 404 });

  // ---- custom fields and tags ----
  const FIELDS = '/contact_custom_fields';
  const FIELD = '/contact_custom_fields/{custom_field_id}';
  const TAGS = '/contact_tags';
  const TAG = '/contact_tags/{tag_id}';
  const cf = await step({ method: 'POST', url: FIELDS, body: { label: 'Member Type', type: 'string' }, expect: 201, check: (j) => assert(j.name === 'Member_Type', 'name from label') });
  await step({ method: 'POST', url: FIELDS, body: { label: 'Member Type', type: 'string' }, expect: 409, check: (j) => assert(Array.isArray(j), 'array body') });
  await step({ method: 'POST', url: FIELDS, body: { label: 'x'.repeat(51), type: 'string' }, expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: `${FIELDS}?limit=100`, expect: 200, check: (j) => assert(j.custom_fields.length === 1, 'one field') });
  await step({ method: 'GET', url: `${FIELDS}?limit=101`, expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: `${FIELDS}/${cf.custom_field_id}`, route: FIELD, expect: 200 });
  await step({ method: 'PUT', url: `${FIELDS}/${cf.custom_field_id}`, route: FIELD, body: { label: 'Member Kind' }, expect: 200 });
  const cfImp = await step({
    method: 'POST', url: '/activities/contacts_json_import', expect: 201,
    body: { import_data: [{ email: 'cf@example.org', 'cf:Member_Kind': 'Gold' }], list_ids: [a.list_id] },
  });
  await waitActivity(cfImp.activity_id);
  const cfc = await step({ method: 'GET', url: '/contacts?email=cf@example.org&include=custom_fields', expect: 200, check: (j) => assert(j.contacts[0].custom_fields[0].value === 'Gold', 'custom field read') });
  await step({ method: 'POST', url: '/activities/contacts_json_import', expect: 400, body: { import_data: [{ email: 'cf@example.org', 'cf:Nope': 'x' }], list_ids: [a.list_id] } });
  const t = await step({ method: 'POST', url: TAGS, body: { name: 'Novi: Board', tag_source: 'ccsync' }, expect: 201 });
  await step({ method: 'POST', url: TAGS, body: { name: 'Novi: Board' }, expect: 409 });
  await step({ method: 'POST', url: TAGS, body: { name: '' }, expect: 400, expectRequestViolation: true });
  await step({ method: 'GET', url: `${TAGS}?include_count=true`, expect: 200, check: (j) => assert(j.tags.length === 1, 'one tag') });
  await step({ method: 'GET', url: `${TAGS}/${t.tag_id}`, route: TAG, expect: 200 });
  await step({ method: 'PUT', url: `${TAGS}/${t.tag_id}`, route: TAG, body: { name: 'Novi: Directors' }, expect: 200 });
  await step({ method: 'GET', url: `${TAGS}/${UNKNOWN}`, route: TAG, expect: 404 });
  const cid = cfc.contacts[0].contact_id;
  const tagAdd = await step({ method: 'POST', url: '/activities/contacts_taggings_add', expect: 201, body: { source: { contact_ids: [cid] }, tag_ids: [t.tag_id] } });
  await waitActivity(tagAdd.activity_id);
  await step({ method: 'GET', url: `/contacts/${cid}?include=taggings,custom_fields`, route: CONTACT, expect: 200, check: (j) => assert(j.taggings[0] === t.tag_id, 'tagged') });
  await step({ method: 'POST', url: '/activities/contacts_taggings_add', expect: 400, expectRequestViolation: true, body: { source: { contact_ids: [cid] } } });
  const tagRem = await step({ method: 'POST', url: '/activities/contacts_taggings_remove', expect: 201, body: { source: { contact_ids: [cid] }, tag_ids: [t.tag_id] } });
  await waitActivity(tagRem.activity_id);
  const tagDel = await step({ method: 'DELETE', url: `${TAGS}/${t.tag_id}`, route: TAG, expect: 202 });
  await waitActivity(tagDel.activity_id);
  await step({ method: 'GET', url: `${TAGS}/${t.tag_id}`, route: TAG, expect: 404 });
  await step({ method: 'DELETE', url: `${FIELDS}/${cf.custom_field_id}`, route: FIELD, expect: 204 });
  await step({ method: 'GET', url: `${FIELDS}/${cf.custom_field_id}`, route: FIELD, expect: 404 });

  // ---- auth, limits, faults ----
  await step({ method: 'GET', url: LISTS, auth: false, expect: 401, expectRequestViolation: true });
  await control('POST', '/config', { max_activities: 0 });
  await step({ method: 'POST', url: '/activities/contacts_json_import', expect: 429, body: { import_data: [{ email: 'q@example.org' }], list_ids: [a.list_id] } });
  await control('POST', '/config', { max_activities: 1000, rate: 4 });
  await sleep(1100);
  for (let i = 0; i < 4; i++) await step({ method: 'GET', url: '/contacts', expect: [200, 429] });
  await step({ method: 'GET', url: '/contacts', expect: 429, check: (j) => assert(j.error_key === 'throttled', 'throttled') });
  await step({ method: 'GET', url: LISTS, expect: 429 });
  await control('POST', '/config', { rate: 0, daily_limit: 1 });
  await control('POST', '/advance_day');
  await step({ method: 'GET', url: LISTS, expect: 200 });
  await step({ method: 'GET', url: LISTS, expect: 429, check: (j) => assert(j.error_key === 'quota_exceeded', 'quota') });
  await control('POST', '/config', { daily_limit: 0 });
  await control('POST', '/faults', { mode: 'status', status: 503, count: 1 });
  await step({ method: 'GET', url: '/contacts', expect: 503 });
  await control('POST', '/faults', { mode: 'status', status: 500, count: 1 });
  await step({ method: 'POST', url: LISTS, body: { name: 'Faulty' }, expect: 500 });

  console.log(`contract: ${passed} passed, ${failed} failed`);
  for (const [gap, n] of gapsSeen) console.log(`  known gap allowed (${n}x): ${gap}`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL  driver: ${e.stack}`);
  console.log(`contract: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
