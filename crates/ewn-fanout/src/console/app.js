// EWN desk console. Served under `script-src 'self'`; everything the server sends is
// treated as hostile: nodes are built with createElement/textContent only, class names
// come from closed sets, and alerts are found through a Map, never a selector built
// from their ids.
'use strict';

const MAX_ALERTS = 500;
const MAX_STATES = 2000;
const LEVELS = ['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'];
const TLPS = ['CLEAR', 'GREEN', 'AMBER', 'AMBER_STRICT', 'RED'];
const ACTOR_KEY = 'ewn.console.actor';

const $ = (id) => document.getElementById(id);
const shown = new Map(); // alert_id -> <li>
const states = new Map(); // alert_id -> {kind: 'superseded' | 'cancelled', by}
let source = null;
let retryTimer = null;

// ---- small DOM helpers -------------------------------------------------------

function str(v) {
  return v === null || v === undefined ? '' : String(v);
}

function list(v) {
  return Array.isArray(v) ? v.map(str).join(', ') : '';
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = str(v);
    else node.setAttribute(k, str(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function slug(value, allowed) {
  return allowed.includes(value) ? value.toLowerCase().replace('_', '-') : 'unknown';
}

function tlpBadge(tlp) {
  const label = tlp === 'AMBER_STRICT' ? 'TLP:AMBER+STRICT' : 'TLP:' + str(tlp);
  return el('span', { class: 'tlp tlp-' + slug(tlp, TLPS), 'data-field': 'tlp', text: label });
}

function fmtTime(s) {
  const d = new Date(str(s));
  return Number.isNaN(d.getTime()) ? str(s) : d.toISOString().slice(0, 19).replace('T', ' ') + 'Z';
}

function timeEl(s, field) {
  return el('time', { datetime: str(s), 'data-field': field, text: fmtTime(s) });
}

function table(caption, heads, rows) {
  const thead = el('thead', {}, el('tr', {}, ...heads.map((h) => el('th', { scope: 'col', text: h }))));
  const tbody = el('tbody');
  for (const cells of rows) tbody.append(el('tr', {}, ...cells.map((c) => el('td', { text: c }))));
  return el('table', {}, el('caption', { class: 'sr-only', text: caption }), thead, tbody);
}

function section(name, title, heads, rows) {
  return el('details', { 'data-section': name },
    el('summary', { text: `${title} (${rows.length})` }),
    rows.length ? table(title, heads, rows) : el('p', { class: 'muted', text: 'None.' }));
}

// ---- API -----------------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// ---- rendering an alert --------------------------------------------------------

function renderAlert(a) {
  const id = str(a.alert_id);
  const level = slug(a.level, LEVELS);
  const li = el('li', {
    class: 'alert level-' + level,
    'data-alert-id': id,
    'data-level': str(a.level),
    'data-msg-type': str(a.msg_type),
    'data-created-at': str(a.created_at),
    'data-acked': 'false',
  });
  if (a.redacted === true) li.setAttribute('data-redacted', 'true');

  const head = el('div', { class: 'alert-head' },
    el('span', { class: 'level level-' + level, 'data-field': 'level', text: a.level }),
    tlpBadge(a.tlp),
    el('strong', { class: 'rule', 'data-field': 'rule', text: a.rule }),
    el('span', { class: 'score', 'data-field': 'score', text: 'score ' + str(a.score) }),
    timeEl(a.created_at, 'time'));
  if (a.msg_type === 'UPDATE' || a.msg_type === 'CANCEL') {
    const verb = a.msg_type === 'UPDATE' ? 'UPDATE of ' : 'CANCEL of ';
    head.append(el('span', { class: 'msg-type msg-' + a.msg_type.toLowerCase(), 'data-field': 'msg-type',
      text: verb + (list(a.references) || 'unknown alert') }));
  }
  if (a.redacted === true) {
    head.append(el('span', { class: 'redacted-badge', 'data-field': 'redacted',
      text: 'REDACTED: details withheld at your clearance' }));
  }
  head.append(el('span', { class: 'state-badge', 'data-field': 'state', hidden: '' }));

  const facts = el('dl', { class: 'facts' });
  const fact = (name, value) => { if (value) facts.append(el('dt', { text: name }), el('dd', { text: value })); };
  fact('States', list(a.states));
  fact('Areas', list(a.areas));
  fact('Categories', list(a.categories));
  fact('Window', a.window_start ? `${fmtTime(a.window_start)} – ${fmtTime(a.window_end)}` : '');
  fact('Alert id', id);

  const reasons = (Array.isArray(a.reasons) ? a.reasons : []).map((r) =>
    [str(r && r.factor), str(r && r.contribution), str(r && r.detail)]);
  const evidence = (Array.isArray(a.evidence) ? a.evidence : []).map((e) => [
    str(e && e.incident_id),
    `${str(e && e.topic)}/${str(e && e.partition)}/${str(e && e.offset)}`,
    str(e && e.key_id),
    str(e && e.signature).slice(0, 16),
    str(e && e.payload_sha256).slice(0, 16),
  ]);

  const ackBtn = el('button', { type: 'button', 'data-action': 'ack', text: 'Acknowledge' });
  const ackStatus = el('span', { class: 'ack-status', role: 'status' });
  ackBtn.addEventListener('click', () => acknowledge(id, li));

  li.append(head, facts,
    section('reasons', 'Reasons', ['Factor', 'Contribution', 'Detail'], reasons),
    section('evidence', 'Evidence', ['Incident', 'Topic/partition/offset', 'Key id', 'Signature', 'Payload SHA-256'], evidence),
    el('div', { class: 'actions' }, ackBtn, ackStatus));
  if (a.acked === true) markAcked(li, '');
  return li;
}

function markAcked(li, note) {
  li.setAttribute('data-acked', 'true');
  const btn = li.querySelector('[data-action="ack"]');
  btn.disabled = true;
  btn.textContent = 'Acknowledged';
  li.querySelector('.ack-status').textContent = note;
}

function applyState(li, st) {
  li.setAttribute('data-state', st.kind);
  const badge = li.querySelector('[data-field="state"]');
  badge.textContent = (st.kind === 'cancelled' ? 'CANCELLED by ' : 'SUPERSEDED by ') + st.by;
  badge.hidden = false;
}

function createdAt(li) {
  const t = Date.parse(li.getAttribute('data-created-at'));
  return Number.isNaN(t) ? Infinity : t;
}

function addAlert(a) {
  if (!a || typeof a !== 'object' || typeof a.alert_id !== 'string' || !a.alert_id) return;
  const li = renderAlert(a);
  const old = shown.get(a.alert_id);
  if (old && old.getAttribute('data-acked') === 'true') markAcked(li, old.querySelector('.ack-status').textContent);
  if (old) old.remove();
  shown.set(a.alert_id, li);

  // Newest first by creation time; resumed history may interleave partitions.
  const ol = $('alerts');
  const t = createdAt(li);
  let before = ol.firstElementChild;
  while (before && createdAt(before) > t) before = before.nextElementSibling;
  ol.insertBefore(li, before);

  if (a.msg_type === 'UPDATE' || a.msg_type === 'CANCEL') {
    const kind = a.msg_type === 'CANCEL' ? 'cancelled' : 'superseded';
    for (const ref of Array.isArray(a.references) ? a.references : []) {
      states.set(str(ref), { kind, by: a.alert_id });
      const target = shown.get(str(ref));
      if (target) applyState(target, states.get(str(ref)));
    }
    while (states.size > MAX_STATES) states.delete(states.keys().next().value);
  }
  const st = states.get(a.alert_id);
  if (st) applyState(li, st);

  while (ol.children.length > MAX_ALERTS) {
    const last = ol.lastElementChild;
    shown.delete(last.getAttribute('data-alert-id'));
    last.remove();
  }
  $('empty').hidden = ol.children.length > 0;
}

async function acknowledge(id, li) {
  const btn = li.querySelector('[data-action="ack"]');
  const status = li.querySelector('.ack-status');
  btn.disabled = true;
  status.textContent = 'Sending…';
  const body = {};
  const actor = $('actor').value.trim();
  if (actor) body.actor = actor;
  try {
    const res = await api('POST', `/api/v1/alerts/${encodeURIComponent(id)}/ack`, body);
    if (res.status === 201 || res.status === 200) {
      let at = '';
      try {
        at = fmtTime((await res.json()).acked_at);
      } catch (err) { /* the ack stands without its time */ }
      markAcked(li, at ? 'at ' + at : '');
      return;
    }
    if (res.status === 401) {
      showLogin('Your session has ended; log in again.');
      return;
    }
    status.textContent = res.status === 404 ? 'Not acknowledged: alert unknown to the server.'
      : `Not acknowledged: server answered ${res.status}.`;
  } catch (err) {
    status.textContent = 'Not acknowledged: network error, try again.';
  }
  btn.disabled = false;
}

// ---- live stream -------------------------------------------------------------

function setConn(status) {
  const c = $('conn');
  c.setAttribute('data-status', status);
  c.textContent = status;
}

function openStream() {
  closeStream();
  setConn('connecting');
  source = new EventSource('/api/v1/stream?history=50');
  source.addEventListener('open', () => setConn('connected'));
  source.addEventListener('alert', (ev) => {
    try {
      addAlert(JSON.parse(ev.data));
    } catch (err) {
      console.warn('ewn console: dropped an undecodable alert event');
    }
  });
  source.addEventListener('gap', (ev) => {
    let msg = 'Some alerts may have been missed.';
    try {
      const m = JSON.parse(ev.data).message;
      if (m) msg = 'Some alerts may have been missed: ' + str(m);
    } catch (err) { /* keep the default text */ }
    $('gap-text').textContent = msg;
    $('gap').hidden = false;
  });
  source.addEventListener('error', () => {
    if (source && source.readyState === EventSource.CONNECTING) {
      setConn('reconnecting'); // the browser retries and sends Last-Event-ID itself
      return;
    }
    // Closed for good (an HTTP error): find out whether the session ended.
    closeStream();
    setConn('reconnecting');
    retryTimer = setTimeout(start, 3000);
  });
}

function closeStream() {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  setConn('offline');
}

// ---- session -----------------------------------------------------------------

function showLogin(message) {
  closeStream();
  $('desk').hidden = true;
  $('login').hidden = false;
  const err = $('login-error');
  err.textContent = str(message);
  err.hidden = !message;
  $('token').focus();
}

function showDesk(me) {
  $('login').hidden = true;
  $('desk').hidden = false;
  $('me-name').textContent = str(me.name);
  $('me-agency').textContent = str(me.agency);
  $('me-subscription').textContent = str(me.subscription);
  const c = $('me-clearance');
  c.className = 'tlp tlp-' + slug(me.clearance, TLPS);
  c.textContent = me.clearance === 'AMBER_STRICT' ? 'TLP:AMBER+STRICT' : 'TLP:' + str(me.clearance);
  if (!source) openStream();
}

async function start() {
  try {
    const res = await api('GET', '/api/v1/me');
    if (res.status === 401) return showLogin('');
    if (!res.ok) throw new Error(`status ${res.status}`);
    showDesk(await res.json());
  } catch (err) {
    if (!$('desk').hidden) {
      setConn('reconnecting');
      retryTimer = setTimeout(start, 5000);
    } else {
      showLogin('The server cannot be reached; retrying.');
      retryTimer = setTimeout(start, 5000);
    }
  }
}

async function login(ev) {
  ev.preventDefault();
  const token = $('token');
  const err = $('login-error');
  err.hidden = true;
  try {
    const res = await api('POST', '/api/v1/session', { token: token.value });
    token.value = '';
    if (res.status === 204 || res.ok) return start();
    err.textContent = res.status === 401 ? 'That token was not accepted.' : `Login failed (${res.status}).`;
  } catch (e) {
    err.textContent = 'The server cannot be reached.';
  }
  err.hidden = false;
}

async function logout() {
  closeStream();
  try {
    await api('DELETE', '/api/v1/session');
  } catch (err) { /* the session cookie expires anyway */ }
  $('alerts').replaceChildren();
  shown.clear();
  states.clear();
  $('empty').hidden = false;
  $('gap').hidden = true;
  showLogin('Logged out.');
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('gap-dismiss').addEventListener('click', () => { $('gap').hidden = true; });
  const actor = $('actor');
  try {
    actor.value = localStorage.getItem(ACTOR_KEY) || '';
    actor.addEventListener('input', () => localStorage.setItem(ACTOR_KEY, actor.value.trim()));
  } catch (err) { /* storage disabled: the name is simply not remembered */ }
  start();
});
