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
const LANGUAGE_KEY = 'ewn.console.language';

// The console's own strings per language. The alert's texts (event, headline,
// description, instruction) are not here: the server sends them in every configured
// language, from the same Fluent catalogues as CAP (crates/ewn-fanout/i18n/*.ftl).
const UI = {
  'en-US': {
    'console-title': 'EWN desk console',
    'token-label': 'Desk token',
    login: 'Log in',
    'desk-title': 'EWN desk',
    officer: 'Officer',
    agency: 'Agency',
    subscription: 'Subscription',
    clearance: 'Clearance',
    'actor-label': 'Your name for acknowledgements',
    'language-label': 'Language',
    logout: 'Log out',
    dismiss: 'Dismiss',
    empty: 'No alerts yet. New alerts appear here as they are raised.',
    'alerts-label': 'Live alerts, newest first',
    score: 'score',
    'update-of': 'UPDATE of ',
    'cancel-of': 'CANCEL of ',
    'unknown-alert': 'unknown alert',
    redacted: 'REDACTED: details withheld at your clearance',
    'cancelled-by': 'CANCELLED by ',
    'superseded-by': 'SUPERSEDED by ',
    states: 'States',
    areas: 'Areas',
    categories: 'Categories',
    window: 'Window',
    'alert-id': 'Alert id',
    reasons: 'Reasons',
    factor: 'Factor',
    contribution: 'Contribution',
    detail: 'Detail',
    evidence: 'Evidence',
    incident: 'Incident',
    'topic-partition-offset': 'Topic/partition/offset',
    'key-id': 'Key id',
    signature: 'Signature',
    'payload-sha256': 'Payload SHA-256',
    none: 'None.',
    acknowledge: 'Acknowledge',
    acknowledged: 'Acknowledged',
    sending: 'Sending…',
    'acked-at': 'at ',
    'session-ended': 'Your session has ended; log in again.',
    'ack-unknown': 'Not acknowledged: alert unknown to the server.',
    'ack-status': 'Not acknowledged: server answered ',
    'ack-network': 'Not acknowledged: network error, try again.',
    'gap-default': 'Some alerts may have been missed.',
    'gap-prefix': 'Some alerts may have been missed: ',
    'unreachable-retrying': 'The server cannot be reached; retrying.',
    unreachable: 'The server cannot be reached.',
    'token-refused': 'That token was not accepted.',
    'login-failed': 'Login failed ',
    'logged-out': 'Logged out.',
    offline: 'offline',
    connecting: 'connecting',
    connected: 'connected',
    reconnecting: 'reconnecting',
  },
  'ru-RU': {
    'console-title': 'Консоль дежурного EWN',
    'token-label': 'Токен дежурной части',
    login: 'Войти',
    'desk-title': 'Дежурная часть EWN',
    officer: 'Сотрудник',
    agency: 'Ведомство',
    subscription: 'Подписка',
    clearance: 'Допуск',
    'actor-label': 'Ваше имя для подтверждений',
    'language-label': 'Язык',
    logout: 'Выйти',
    dismiss: 'Закрыть',
    empty: 'Оповещений пока нет. Новые оповещения появляются здесь по мере поступления.',
    'alerts-label': 'Оповещения в реальном времени, новые сверху',
    score: 'оценка',
    'update-of': 'ОБНОВЛЕНИЕ ',
    'cancel-of': 'ОТМЕНА ',
    'unknown-alert': 'неизвестного оповещения',
    redacted: 'СКРЫТО: подробности недоступны при вашем допуске',
    'cancelled-by': 'ОТМЕНЕНО: ',
    'superseded-by': 'ЗАМЕНЕНО: ',
    states: 'Государства',
    areas: 'Районы',
    categories: 'Категории',
    window: 'Окно',
    'alert-id': 'Идентификатор оповещения',
    reasons: 'Основания',
    factor: 'Фактор',
    contribution: 'Вклад',
    detail: 'Подробности',
    evidence: 'Доказательства',
    incident: 'Инцидент',
    'topic-partition-offset': 'Топик/раздел/смещение',
    'key-id': 'Ключ',
    signature: 'Подпись',
    'payload-sha256': 'SHA-256 данных',
    none: 'Нет.',
    acknowledge: 'Подтвердить',
    acknowledged: 'Подтверждено',
    sending: 'Отправка…',
    'acked-at': 'в ',
    'session-ended': 'Сеанс завершён; войдите снова.',
    'ack-unknown': 'Не подтверждено: оповещение неизвестно серверу.',
    'ack-status': 'Не подтверждено: ответ сервера ',
    'ack-network': 'Не подтверждено: ошибка сети, попробуйте ещё раз.',
    'gap-default': 'Некоторые оповещения могли быть пропущены.',
    'gap-prefix': 'Некоторые оповещения могли быть пропущены: ',
    'unreachable-retrying': 'Сервер недоступен; повторная попытка.',
    unreachable: 'Сервер недоступен.',
    'token-refused': 'Этот токен не принят.',
    'login-failed': 'Вход не выполнен ',
    'logged-out': 'Вы вышли.',
    offline: 'нет связи',
    connecting: 'подключение',
    connected: 'подключено',
    reconnecting: 'переподключение',
  },
};
const LANGUAGES = Object.keys(UI);

const $ = (id) => document.getElementById(id);
const shown = new Map(); // alert_id -> <li>
const states = new Map(); // alert_id -> {kind: 'superseded' | 'cancelled', by}
const received = new Map(); // alert_id -> the alert as received, to render it again in another language
let source = null;
let retryTimer = null;
let language = 'en-US';

// ---- language ------------------------------------------------------------------

function t(key) {
  const table = UI[language] || UI['en-US'];
  return key in table ? table[key] : UI['en-US'][key];
}

// The stored choice, else the browser's language when the console has it, else English.
function initialLanguage() {
  try {
    const stored = localStorage.getItem(LANGUAGE_KEY);
    if (LANGUAGES.includes(stored)) return stored;
  } catch (err) { /* storage disabled */ }
  const nav = str(navigator.language).toLowerCase();
  return LANGUAGES.find((l) => nav === l.toLowerCase() || nav === l.slice(0, 2)) || 'en-US';
}

function applyLanguage(lang, remember) {
  language = LANGUAGES.includes(lang) ? lang : 'en-US';
  document.documentElement.lang = language;
  if (remember) {
    try {
      localStorage.setItem(LANGUAGE_KEY, language);
    } catch (err) { /* storage disabled: the choice lasts for this page only */ }
  }
  $('language').value = language;
  document.title = t('console-title');
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.getAttribute('data-i18n'));
  for (const node of document.querySelectorAll('[data-i18n-label]')) {
    node.setAttribute('aria-label', t(node.getAttribute('data-i18n-label')));
  }
  const conn = $('conn');
  conn.textContent = t(conn.getAttribute('data-status'));
  // Every alert again (addAlert replaces each in place, keeping its acknowledgement and
  // its superseded/cancelled state; the order is by creation time as before).
  for (const a of [...received.values()]) addAlert(a);
}

// The alert's texts in the chosen language, else in the first language it came with.
function localText(a) {
  const texts = Array.isArray(a.texts) ? a.texts.filter((x) => x && typeof x === 'object') : [];
  return texts.find((x) => x.language === language) || texts[0] || null;
}

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
    rows.length ? table(title, heads, rows) : el('p', { class: 'muted', text: t('none') }));
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
    el('span', { class: 'score', 'data-field': 'score', text: t('score') + ' ' + str(a.score) }),
    timeEl(a.created_at, 'time'));
  if (a.msg_type === 'UPDATE' || a.msg_type === 'CANCEL') {
    const verb = a.msg_type === 'UPDATE' ? t('update-of') : t('cancel-of');
    head.append(el('span', { class: 'msg-type msg-' + a.msg_type.toLowerCase(), 'data-field': 'msg-type',
      text: verb + (list(a.references) || t('unknown-alert')) }));
  }
  if (a.redacted === true) {
    head.append(el('span', { class: 'redacted-badge', 'data-field': 'redacted', text: t('redacted') }));
  }
  head.append(el('span', { class: 'state-badge', 'data-field': 'state', hidden: '' }));

  // The catalogue's texts in the chosen language (headline, instruction), as CAP shows them.
  const local = localText(a);
  const headline = local
    ? el('p', { class: 'headline', 'data-field': 'headline', lang: str(local.language), text: local.headline })
    : null;
  const instruction = local
    ? el('p', { class: 'instruction', 'data-field': 'instruction', lang: str(local.language), text: local.instruction })
    : null;

  const facts = el('dl', { class: 'facts' });
  const fact = (name, value) => { if (value) facts.append(el('dt', { text: name }), el('dd', { text: value })); };
  fact(t('states'), list(a.states));
  fact(t('areas'), list(a.areas));
  fact(t('categories'), list(a.categories));
  fact(t('window'), a.window_start ? `${fmtTime(a.window_start)} – ${fmtTime(a.window_end)}` : '');
  fact(t('alert-id'), id);

  const reasons = (Array.isArray(a.reasons) ? a.reasons : []).map((r) =>
    [str(r && r.factor), str(r && r.contribution), str(r && r.detail)]);
  const evidence = (Array.isArray(a.evidence) ? a.evidence : []).map((e) => [
    str(e && e.incident_id),
    `${str(e && e.topic)}/${str(e && e.partition)}/${str(e && e.offset)}`,
    str(e && e.key_id),
    str(e && e.signature).slice(0, 16),
    str(e && e.payload_sha256).slice(0, 16),
  ]);

  const ackBtn = el('button', { type: 'button', 'data-action': 'ack', text: t('acknowledge') });
  const ackStatus = el('span', { class: 'ack-status', role: 'status' });
  ackBtn.addEventListener('click', () => acknowledge(id, li));

  li.append(head, headline, instruction, facts,
    section('reasons', t('reasons'), [t('factor'), t('contribution'), t('detail')], reasons),
    section('evidence', t('evidence'),
      [t('incident'), t('topic-partition-offset'), t('key-id'), t('signature'), t('payload-sha256')], evidence),
    el('div', { class: 'actions' }, ackBtn, ackStatus));
  if (a.acked === true) markAcked(li, '');
  return li;
}

function markAcked(li, note) {
  li.setAttribute('data-acked', 'true');
  const btn = li.querySelector('[data-action="ack"]');
  btn.disabled = true;
  btn.textContent = t('acknowledged');
  li.querySelector('.ack-status').textContent = note;
}

function applyState(li, st) {
  li.setAttribute('data-state', st.kind);
  const badge = li.querySelector('[data-field="state"]');
  badge.textContent = (st.kind === 'cancelled' ? t('cancelled-by') : t('superseded-by')) + st.by;
  badge.hidden = false;
}

function createdAt(li) {
  const t = Date.parse(li.getAttribute('data-created-at'));
  return Number.isNaN(t) ? Infinity : t;
}

function addAlert(a) {
  if (!a || typeof a !== 'object' || typeof a.alert_id !== 'string' || !a.alert_id) return;
  const li = renderAlert(a);
  received.delete(a.alert_id);
  received.set(a.alert_id, a);
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
    received.delete(last.getAttribute('data-alert-id'));
    last.remove();
  }
  $('empty').hidden = ol.children.length > 0;
}

async function acknowledge(id, li) {
  const btn = li.querySelector('[data-action="ack"]');
  const status = li.querySelector('.ack-status');
  btn.disabled = true;
  status.textContent = t('sending');
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
      markAcked(li, at ? t('acked-at') + at : '');
      return;
    }
    if (res.status === 401) {
      showLogin(t('session-ended'));
      return;
    }
    status.textContent = res.status === 404 ? t('ack-unknown') : `${t('ack-status')}${res.status}.`;
  } catch (err) {
    status.textContent = t('ack-network');
  }
  btn.disabled = false;
}

// ---- live stream -------------------------------------------------------------

function setConn(status) {
  const c = $('conn');
  c.setAttribute('data-status', status);
  c.textContent = t(status);
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
    let msg = t('gap-default');
    try {
      const m = JSON.parse(ev.data).message;
      if (m) msg = t('gap-prefix') + str(m);
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
      showLogin(t('unreachable-retrying'));
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
    err.textContent = res.status === 401 ? t('token-refused') : `${t('login-failed')}(${res.status}).`;
  } catch (e) {
    err.textContent = t('unreachable');
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
  received.clear();
  $('empty').hidden = false;
  $('gap').hidden = true;
  showLogin(t('logged-out'));
}

document.addEventListener('DOMContentLoaded', () => {
  applyLanguage(initialLanguage(), false);
  $('language').addEventListener('change', (ev) => applyLanguage(ev.target.value, true));
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
