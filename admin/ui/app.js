// Fulcrum admin UI. Plain JavaScript, no build step. Every server-provided
// string reaches the page through textContent or an attribute, never HTML.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const MAX_EVENTS = 500;

  const COLOR_LABEL = { green: 'Healthy', yellow: 'Degraded', red: 'Down', blue: 'Admin offline' };
  const STATE_LABEL = { ready: 'Ready', drain: 'Draining', maintenance: 'Maintenance' };
  const ACTIONS = [
    { action: 'maintenance', label: 'Take offline', title: 'Maintenance: no traffic at all' },
    { action: 'drain', label: 'Drain', title: 'Drain: no new clients; established and persistent ones continue' },
    { action: 'ready', label: 'Bring online', title: 'Ready: take traffic' },
  ];

  const app = {
    csrf: '',
    user: '',
    timer: 0,
    running: false,
    page: 'overview',
    cards: new Map(), // service name → card
    lastEventId: 0,
    eventsLoaded: false,
    eventRows: [],
  };

  const $ = (id) => document.getElementById(id);

  // el builds an element. props: class, text, title, and any attribute
  // (data-*, type, ...). Children are nodes or strings (as text).
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  const setText = (node, text) => { text = String(text); if (node.textContent !== text) node.textContent = text; };
  const setAttr = (node, name, value) => {
    value = String(value);
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  };

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // api calls the JSON API. Mutating calls carry the session's CSRF token.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') headers['X-CSRF-Token'] = app.csrf;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const msg = (data && data.error) || `${res.status} ${res.statusText}`;
      if (res.status === 401 && path !== '/api/v1/login') {
        showLogin('Your session has ended. Please sign in again.');
      }
      throw new ApiError(res.status, msg);
    }
    return data;
  }

  // ---- Formatting ----
  function fmtRate(n) {
    if (!n) return '0';
    if (n >= 100) return Math.round(n).toLocaleString();
    if (n >= 10) return n.toFixed(1);
    return n.toFixed(2).replace(/\.?0+$/, '') || '0';
  }
  const fmtInt = (n) => Number(n || 0).toLocaleString();
  function fmtLatency(ns) {
    const ms = ns / 1e6;
    if (ms < 1) return `${Math.max(ms, 0).toFixed(2)} ms`;
    if (ms < 100) return `${ms.toFixed(1)} ms`;
    return `${Math.round(ms)} ms`;
  }
  function isZeroTime(t) { return !t || t.startsWith('0001-01-01'); }
  function fmtAgo(t, now) {
    const s = Math.max(0, Math.round((now - Date.parse(t)) / 1000));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    return `${Math.floor(s / 3600)}h ago`;
  }
  const pad = (n) => String(n).padStart(2, '0');
  function fmtClock(d) { return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
  function fmtDate(d) { return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; }

  // ---- Views ----
  function showLogin(message) {
    stopPolling();
    app.csrf = '';
    $('boot').hidden = true;
    $('main-view').hidden = true;
    $('login-view').hidden = false;
    const err = $('login-error');
    if (message) { setText(err, message); err.hidden = false; } else { err.hidden = true; }
    $('login-password').value = '';
    const user = $('login-user');
    (user.value ? $('login-password') : user).focus();
  }

  function showMain() {
    $('boot').hidden = true;
    $('login-view').hidden = true;
    $('main-view').hidden = false;
    setText($('user-name'), app.user);
    route();
    startPolling();
  }

  function route() {
    const events = location.hash === '#/events';
    app.page = events ? 'events' : 'overview';
    $('overview-page').hidden = events;
    $('events-page').hidden = !events;
    const cur = events ? $('nav-events') : $('nav-overview');
    for (const a of document.querySelectorAll('.nav a')) {
      if (a === cur) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = events ? 'Events · Fulcrum' : 'Overview · Fulcrum';
  }

  function showError(message) {
    setText($('error-text'), message);
    $('error').hidden = false;
  }
  function hideError() { $('error').hidden = true; }

  function setLive(ok, text) {
    setAttr($('live'), 'data-live', ok ? 'ok' : 'down');
    setText($('live-text'), text);
  }

  // ---- Polling ----
  function startPolling() {
    if (app.running) return;
    app.running = true;
    tick();
  }
  function stopPolling() {
    app.running = false;
    clearTimeout(app.timer);
  }
  // tick refreshes, then schedules the next refresh: never two at once.
  async function tick() {
    clearTimeout(app.timer);
    try {
      await refresh();
    } finally {
      if (app.running) app.timer = setTimeout(tick, REFRESH_MS);
    }
  }

  async function refresh() {
    try {
      const [status, haStatus] = await Promise.all([api('GET', '/api/v1/status'), fetchHA(), refreshEvents()]);
      if (!app.running) return;
      renderOverview(status);
      renderHA(haStatus);
      const now = new Date();
      setLive(true, 'Live');
      setText($('footer-updated'), `Updated ${fmtClock(now)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      setLive(false, 'Connection lost');
    }
  }

  // ---- High availability (header) ----
  // fetchHA returns the [ha] status, or null when HA is off (404) or the
  // call failed: the header then shows nothing about HA.
  async function fetchHA() {
    try {
      return await api('GET', '/api/v1/ha');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      return null;
    }
  }

  // renderHA shows the node's role as an appliance does: Master (active) or
  // Backup (passive), and whether a Backup hears its peer.
  function renderHA(st) {
    const el = $('ha');
    if (!st) { el.hidden = true; return; }
    const fams = st.families || [];
    const peer = fams.some((f) => f.peer === 'down') ? 'down' : (fams.some((f) => f.peer === 'up') ? 'up' : '');
    const roles = { master: 'Master (active)', backup: 'Backup (passive)', fault: 'Fault', initialize: 'Starting' };
    let text = 'HA: ' + (roles[st.state] || st.state);
    if (peer) text += ' · peer link ' + peer;
    if (st.override) text += ' · ' + st.override;
    setAttr(el, 'data-state', st.state);
    setAttr(el, 'data-peer', peer);
    setText($('ha-text'), text);
    el.hidden = false;
  }

  // ---- Overview ----
  function renderOverview(status) {
    const services = status.services || [];
    const now = Date.parse(status.time) || Date.now();
    const container = $('services');
    const seen = new Set();
    services.forEach((svc, i) => {
      let card = app.cards.get(svc.name);
      if (!card) {
        card = buildCard(svc.name);
        app.cards.set(svc.name, card);
      }
      if (container.children[i] !== card.root) container.insertBefore(card.root, container.children[i] || null);
      updateCard(card, svc, now);
      seen.add(svc.name);
    });
    for (const [name, card] of app.cards) {
      if (!seen.has(name)) { card.root.remove(); app.cards.delete(name); }
    }
    $('services-empty').hidden = services.length > 0;
    renderTiles(services);
  }

  function renderTiles(services) {
    let up = 0; let total = 0; let offline = 0; let rate = 0; let errRate = 0; let active = 0; let queue = 0;
    const byColor = { green: 0, yellow: 0, red: 0, blue: 0 };
    for (const s of services) {
      byColor[s.color] = (byColor[s.color] || 0) + 1;
      rate += s.request_rate || 0;
      errRate += s.error_rate || 0;
      active += s.active_connections || 0;
      queue += s.queue || 0;
      for (const rs of s.real_servers || []) {
        total++;
        if (rs.health === 'up') up++;
        if (rs.state !== 'ready') offline++;
      }
    }
    setText($('t-services'), services.length);
    const foot = $('t-services-foot');
    const parts = ['green', 'yellow', 'red', 'blue'].filter((c) => byColor[c]).map((c) =>
      el('span', { class: 'chip-count' }, el('span', { class: 'dot', 'data-color': c }), `${byColor[c]} ${COLOR_LABEL[c].toLowerCase()}`));
    const sig = parts.map((p) => p.textContent).join('|');
    if (foot.dataset.sig !== sig) { foot.replaceChildren(...parts); foot.dataset.sig = sig; }
    setText($('t-servers'), `${up} / ${total}`);
    setText($('t-servers-foot'), offline ? `${offline} deliberately offline` : 'none deliberately offline');
    setText($('t-rate'), fmtRate(rate));
    setText($('t-rate-foot'), `${fmtRate(errRate)} errors / s`);
    setText($('t-active'), fmtInt(active));
    setText($('t-active-foot'), `${fmtInt(queue)} queued`);
  }

  function stat(label) {
    const value = el('div', { class: 'stat-value' });
    return { node: el('div', { class: 'stat' }, el('div', { class: 'stat-label', text: label }), value), value };
  }

  function buildCard(name) {
    const pillDot = el('span', { class: 'dot' });
    const pillText = el('span');
    const pill = el('span', { class: 'pill' }, pillDot, pillText);
    // Shown while the fallback server answers (no real server available).
    const fallback = el('span', { class: 'badge', 'data-v': 'fallback', hidden: '',
      title: 'No real server is available: the fallback server answers the requests', text: 'Fallback active' });
    const meta = el('div', { class: 'service-meta' });
    const sActive = stat('Active');
    const sQueue = stat('Queue');
    const sRate = stat('Req/s');
    const sErr = stat('Errors/s');
    const tbody = el('tbody');
    const table = el('table', { class: 'table servers' },
      el('thead', {}, el('tr', {},
        el('th', { class: 'c-name', text: 'Real server' }), el('th', { class: 'c-health', text: 'Health' }),
        el('th', { class: 'c-state', text: 'State' }), el('th', { class: 'c-weight r', text: 'Weight' }),
        el('th', { class: 'c-active r', text: 'Active' }), el('th', { class: 'c-rate r', text: 'Req/s' }),
        el('th', { class: 'c-check', text: 'Last check' }), el('th', { class: 'c-actions r', text: 'Actions' }))),
      tbody);
    const root = el('section', { class: 'card service', 'data-service': name },
      el('div', { class: 'service-head' },
        el('div', { class: 'service-title' },
          el('div', { class: 'service-name-row' }, el('h2', { class: 'service-name', text: name }), pill, fallback),
          meta),
        el('div', { class: 'service-stats' }, sActive.node, sQueue.node, sRate.node, sErr.node)),
      el('div', { class: 'table-wrap' }, table),
      el('div', { class: 'empty', hidden: '' }, 'No real servers.'));
    return { root, pill, pillText, fallback, meta, metaSig: '', sActive, sQueue, sRate, sErr, tbody, rows: new Map() };
  }

  function updateCard(card, svc, now) {
    setAttr(card.root, 'data-color', svc.color);
    setAttr(card.pill, 'data-color', svc.color);
    setAttr(card.pill.firstChild, 'data-color', svc.color);
    setText(card.pillText, COLOR_LABEL[svc.color] || svc.color);
    const fallbackActive = Boolean(svc.fallback && svc.fallback_active);
    setAttr(card.root, 'data-fallback-active', fallbackActive);
    card.fallback.hidden = !fallbackActive;
    // A pool (no listen) is reached only through routes: it shows "pool"
    // where a listening service shows its addresses.
    const metaSig = [svc.mode, svc.protocol, svc.scheduler, svc.pool, svc.fallback, ...(svc.listen || [])].join('|');
    if (card.metaSig !== metaSig) {
      const where = svc.pool
        ? [el('span', { class: 'chip', 'data-v': 'pool', title: 'No listen address: reached through routes', text: 'pool' })]
        : (svc.listen || []).map((l) => el('span', { class: 'chip mono', text: l }));
      const fb = svc.fallback
        ? [el('span', { class: 'chip mono', 'data-v': 'fallback', title: 'Fallback server', text: `fallback ${svc.fallback}` })]
        : [];
      card.meta.replaceChildren(
        // An L4 service (dr, nat, tun) has a protocol: "DR/TCP".
        el('span', {
          class: 'chip', title: svc.protocol ? 'Forwarded by the kernel (IPVS)' : null,
          text: (svc.mode || '').toUpperCase() + (svc.protocol ? `/${svc.protocol.toUpperCase()}` : ''),
        }),
        el('span', { class: 'chip', text: svc.scheduler || '' }),
        ...where, ...fb);
      card.metaSig = metaSig;
    }
    setText(card.sActive.value, fmtInt(svc.active_connections));
    setText(card.sQueue.value, fmtInt(svc.queue));
    setText(card.sRate.value, fmtRate(svc.request_rate));
    setText(card.sErr.value, fmtRate(svc.error_rate));
    card.sErr.value.classList.toggle('bad', svc.error_rate > 0);

    const servers = svc.real_servers || [];
    const seen = new Set();
    servers.forEach((rs, i) => {
      let row = card.rows.get(rs.name);
      if (!row) {
        row = buildRow(svc.name, rs.name);
        card.rows.set(rs.name, row);
      }
      if (card.tbody.children[i] !== row.tr) card.tbody.insertBefore(row.tr, card.tbody.children[i] || null);
      updateRow(row, rs, now);
      seen.add(rs.name);
    });
    for (const [name, row] of card.rows) {
      if (!seen.has(name)) { row.tr.remove(); card.rows.delete(name); }
    }
    card.root.lastChild.hidden = servers.length > 0;
  }

  function buildRow(service, server) {
    const dot = el('span', { class: 'dot' });
    const addr = el('div', { class: 'rs-addr' });
    const health = el('span', { class: 'badge' });
    const state = el('span', { class: 'badge' });
    const weight = el('span', { class: 'num' });
    const weightSub = el('div', { class: 'sub num' });
    const active = el('span', { class: 'num' });
    const rate = el('span', { class: 'num' });
    const checkIcon = el('span', { class: 'check-icon', 'aria-hidden': 'true' });
    const checkDetail = el('span', { class: 'check-detail' });
    const checkMeta = el('div', { class: 'check-meta' });
    const buttons = ACTIONS.map((a) => el('button', {
      type: 'button', class: 'btn btn-sm', 'data-action': a.action, title: a.title, text: a.label,
    }));
    const tr = el('tr', { 'data-service': service, 'data-server': server },
      el('td', {}, el('div', { class: 'rs-name' }, dot, el('span', { text: server, title: server })), addr),
      el('td', {}, health),
      el('td', {}, state),
      el('td', { class: 'r' }, weight, weightSub),
      el('td', { class: 'r' }, active),
      el('td', { class: 'r' }, rate),
      el('td', { class: 'check' }, el('div', { class: 'check-line' }, checkIcon, checkDetail), checkMeta),
      el('td', { class: 'r' }, el('div', { class: 'actions' }, ...buttons)));
    return { tr, dot, addr, health, state, weight, weightSub, active, rate, checkIcon, checkDetail, checkMeta, buttons, busy: false };
  }

  function updateRow(row, rs, now) {
    setAttr(row.tr, 'data-color', rs.color);
    setAttr(row.tr, 'data-state', rs.state);
    setAttr(row.tr, 'data-health', rs.health);
    setAttr(row.dot, 'data-color', rs.color);
    setAttr(row.dot, 'title', COLOR_LABEL[rs.color] || rs.color);
    setText(row.addr, rs.address);
    setAttr(row.health, 'data-v', rs.health);
    setText(row.health, rs.health === 'up' ? 'Up' : rs.health === 'down' ? 'Down' : rs.health);
    setAttr(row.state, 'data-v', rs.state);
    setText(row.state, STATE_LABEL[rs.state] || rs.state);
    setText(row.weight, rs.weight);
    setText(row.weightSub, rs.effective_weight !== rs.weight ? `eff. ${rs.effective_weight}` : '');
    setText(row.active, rs.max_conns ? `${fmtInt(rs.active)} / ${fmtInt(rs.max_conns)}` : fmtInt(rs.active));
    setText(row.rate, fmtRate(rs.request_rate));

    const c = rs.check || {};
    if (c.type === 'none') {
      setAttr(row.checkIcon, 'data-ok', 'none');
      setText(row.checkIcon, '–');
      setText(row.checkDetail, 'No active check');
      setText(row.checkMeta, c.agent ? `agent: ${c.agent}` : '');
    } else if (isZeroTime(c.time)) {
      setAttr(row.checkIcon, 'data-ok', 'none');
      setText(row.checkIcon, '…');
      setText(row.checkDetail, `${(c.type || '').toUpperCase()} check pending`);
      setText(row.checkMeta, '');
    } else {
      setAttr(row.checkIcon, 'data-ok', c.ok ? 'true' : 'false');
      setText(row.checkIcon, c.ok ? '✓' : '✕');
      setText(row.checkDetail, c.detail || (c.ok ? 'OK' : 'failed'));
      const meta = [(c.type || '').toUpperCase(), fmtLatency(c.latency_ns || 0), fmtAgo(c.time, now)];
      if (c.agent) meta.push(`agent: ${c.agent}`);
      setText(row.checkMeta, meta.join(' · '));
    }
    setAttr(row.checkDetail, 'title', c.detail || '');

    for (const b of row.buttons) {
      const current = b.dataset.action === rs.state;
      setAttr(b, 'aria-pressed', current ? 'true' : 'false');
      b.disabled = row.busy || current;
    }
  }

  async function setState(tr, action) {
    const service = tr.dataset.service;
    const server = tr.dataset.server;
    const card = app.cards.get(service);
    const row = card && card.rows.get(server);
    if (!row || row.busy) return;
    row.busy = true;
    for (const b of row.buttons) b.disabled = true;
    try {
      const rs = await api('PUT',
        `/api/v1/services/${encodeURIComponent(service)}/servers/${encodeURIComponent(server)}/state`,
        { state: action });
      hideError();
      row.busy = false;
      if (rs && rs.name) updateRow(row, rs, Date.now());
      tick();
    } catch (e) {
      row.busy = false;
      const label = ACTIONS.find((a) => a.action === action).label;
      if (!(e instanceof ApiError && e.status === 401)) {
        showError(`${label} failed for ${service}/${server}: ${e.message}`);
      }
      tick();
    }
  }

  // ---- Events ----
  async function refreshEvents() {
    const data = await api('GET', `/api/v1/events?after=${app.lastEventId}`);
    const events = data.events || [];
    if (!events.length && app.eventsLoaded) return;
    const body = $('events-body');
    const fresh = app.eventsLoaded;
    for (const ev of events) {
      const d = new Date(ev.time);
      const target = [ev.service, ev.real_server].filter(Boolean).join(' / ');
      const tr = el('tr', { 'data-event': String(ev.id), 'data-kind': ev.kind, class: fresh ? 'fresh' : null },
        el('td', {}, el('div', { class: 'ev-time', text: fmtClock(d) }), el('div', { class: 'ev-date', text: fmtDate(d) })),
        el('td', {}, el('span', { class: 'badge', 'data-v': ev.kind, text: ev.kind })),
        el('td', { class: 'mono', text: target || '—' }),
        el('td', { text: ev.message }));
      body.insertBefore(tr, body.firstChild);
      app.eventRows.push(tr);
    }
    while (app.eventRows.length > MAX_EVENTS) app.eventRows.shift().remove();
    app.lastEventId = data.last_id || app.lastEventId;
    app.eventsLoaded = true;
    $('events-empty').hidden = app.eventRows.length > 0;
  }

  // ---- Login / logout ----
  async function login(ev) {
    ev.preventDefault();
    const user = $('login-user').value.trim();
    const password = $('login-password').value;
    const err = $('login-error');
    if (!user || !password) {
      setText(err, 'Enter your user name and password.');
      err.hidden = false;
      return;
    }
    const submit = $('login-submit');
    submit.disabled = true;
    setText(submit, 'Signing in…');
    try {
      const s = await api('POST', '/api/v1/login', { user, password });
      app.csrf = s.csrf_token;
      app.user = s.user;
      $('login-password').value = '';
      err.hidden = true;
      showMain();
    } catch (e) {
      setText(err, e.status === 401 ? 'Invalid user name or password.' : e.message);
      err.hidden = false;
      $('login-password').select();
    } finally {
      submit.disabled = false;
      setText(submit, 'Sign in');
    }
  }

  async function logout() {
    try { await api('POST', '/api/v1/logout'); } catch (_) { /* the session is gone either way */ }
    resetViews();
    showLogin();
  }

  function resetViews() {
    for (const card of app.cards.values()) card.root.remove();
    app.cards.clear();
    $('events-body').replaceChildren();
    app.eventRows = [];
    app.lastEventId = 0;
    app.eventsLoaded = false;
    hideError();
  }

  async function boot() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('error-close').addEventListener('click', hideError);
    $('services').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (!b || b.disabled) return;
      setState(b.closest('tr'), b.dataset.action);
    });
    window.addEventListener('hashchange', route);
    try {
      const s = await api('GET', '/api/v1/session');
      if (s && s.authenticated && s.csrf_token) {
        app.csrf = s.csrf_token;
        app.user = s.user;
        showMain();
        return;
      }
    } catch (_) { /* fall through to the login page */ }
    showLogin();
  }

  document.addEventListener('DOMContentLoaded', boot);
})();
