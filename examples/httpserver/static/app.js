'use strict';

// The page of the exporter demo: plain DOM and fetch, no build step. It
// talks to the exporterhttp API mounted at API (the server renders it into
// <body data-api>), whose errors are RFC 9457 problem documents.
//
// Live exports are followed on their event streams (GET API/{id}/events),
// read with fetch rather than EventSource, because an EventSource hides
// the heartbeat comments the server sends: the page needs them to tell a
// quiet export from a dead connection. Over HTTP/1.1 a browser opens at
// most 6 connections to a host and each stream holds one, so at most
// MAX_STREAMS exports are streamed at a time; the others are polled
// (GET API/{id}) until a stream is free.
//
// The page tells the truth when it loses contact. An export it follows
// whose stream fails, ends without its end, or brings neither an event nor
// a heartbeat for STALL_MS (or whose poll fails) is shown as
// "reconnecting… last contact HH:MM:SS", with its progress greyed and its
// Cancel button disabled, until a server answers for it again: the page
// then re-reads its status (GET API/{id}) and follows it again, resuming
// the stream where it was (Last-Event-ID).

const API = document.body.dataset.api || '/exports';
const HEARTBEAT_MS = Number(document.body.dataset.heartbeatMs) || 15000;
// A stream silent for two heartbeats (and a second for the network) has
// lost contact.
const STALL_MS = 2 * HEARTBEAT_MS + 1000;
// Waits before each attempt to reach a server again; the last repeats.
const RETRY_MS = [250, 1000, 2000, 4000];
const MAX_STREAMS = 4;
const POLL_MS = 1000;
const PAGE_SIZE = 20;

// followers: export id -> its follower (see follow).
const followers = new Map();
let pollTimer = null;
let polling = false; // a round of poll is under way
let nextCursor = '';
let currentUser = '';
// generation changes when the user does; answers for an older one are dropped.
let generation = 0;

const $ = (selector) => document.querySelector(selector);

const exportURL = (id, suffix) => `${API}/${encodeURIComponent(id)}${suffix || ''}`;

class APIError extends Error {
  constructor(message, status, problem) {
    super(message);
    this.status = status;
    this.problem = problem || {};
  }
}

// noContact is the APIError of a request that reached no server (the
// network failed), or a proxy that had none to forward it to (502, 504).
function noContact(err) {
  return !(err instanceof APIError) || err.status === 0 || err.status === 502 || err.status === 504;
}

// readProblem returns the message of an error response: the problem
// document's detail or title, else the status line.
async function readProblem(res) {
  let problem = null;
  try {
    problem = await res.json();
  } catch (e) {
    problem = null;
  }
  const message = (problem && (problem.detail || problem.title)) || `${res.status} ${res.statusText}`;
  return new APIError(message, res.status, problem);
}

// api calls the JSON API and returns the decoded body, or throws an
// APIError: with the server's problem document, or with status 0 when no
// server answered (within timeoutMs, if given).
async function api(method, path, body, timeoutMs) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
  if (timeoutMs) {
    init.signal = AbortSignal.timeout(timeoutMs);
  }
  if (body !== undefined && body !== null) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new APIError(`cannot reach the server (${err.message})`, 0);
  }
  if (!res.ok) {
    throw await readProblem(res);
  }
  return res.status === 204 ? null : res.json();
}

function showError(err) {
  let message = err instanceof Error ? err.message : String(err);
  if (err && err.status === 401) {
    message = `Log in first. (${message})`;
  } else if (err && err.status) {
    message = `${err.status}: ${message}`;
  }
  const box = $('#error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  const box = $('#error');
  box.textContent = '';
  box.hidden = true;
}

// Formatting.

// formatBytes writes n in binary (IEC) units with one decimal, as
// exportctl does: 512 B, 3.0 MiB.
function formatBytes(n) {
  if (n < 1024) {
    return `${n} B`;
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(1)} ${units[u]}`;
}

// clock writes a time as HH:MM:SS, 24-hour, local time.
function clock(d) {
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// readOf is the bytes read from the export's source (job.read), which
// moves inside a chunk, where job.bytes (stored) moves a chunk at a time.
const readOf = (job) => Math.max(job.read || 0, job.bytes || 0);

const isLive = (status) => status === 'pending' || status === 'running';
const rank = { pending: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };

// The list.

function itemFor(id) {
  return document.querySelector(`#exports li.export[data-id="${CSS.escape(id)}"]`);
}

function createItem(job) {
  const li = document.createElement('li');
  li.className = 'export';
  li.dataset.id = job.id;
  li.dataset.contact = 'ok';
  // A fixed template: job fields are set with textContent below.
  li.innerHTML = `
    <div class="line">
      <span class="filename"></span>
      <span class="status"></span>
    </div>
    <progress class="progress" max="1"></progress>
    <div class="line details">
      <span class="bytes"></span>
      <span class="meta"></span>
      <span class="actions"><button type="button" class="cancel">Cancel</button></span>
    </div>
    <div class="contact" role="status"></div>
    <div class="reason"></div>`;
  li.querySelector('.cancel').addEventListener('click', () => cancelExport(job.id));
  return li;
}

// newer reports whether job is a later snapshot than the one li shows:
// statuses only move forward and the bytes read never decrease, so a late
// answer (a poll, a page load) never takes an item back.
function newer(li, job) {
  const shown = li.dataset.status;
  if (!shown) {
    return true;
  }
  if (rank[job.status] !== rank[shown]) {
    return rank[job.status] > rank[shown];
  }
  return isLive(shown) && readOf(job) >= Number(li.dataset.read || 0);
}

function render(li, job) {
  li.dataset.status = job.status;
  li.dataset.read = String(readOf(job));
  li.dataset.stored = String(job.bytes || 0);
  const md = job.metadata || {};
  li.querySelector('.filename').textContent = md.filename || job.id;
  li.querySelector('.filename').title = job.id;

  // The bar shows read/total when the total is known, else it is full once
  // completed and indeterminate while live.
  const progress = li.querySelector('.progress');
  const read = readOf(job);
  if (job.status === 'completed') {
    progress.value = 1;
  } else if (job.total > 0) {
    progress.value = Math.min(1, read / job.total);
  } else if (isLive(job.status)) {
    progress.removeAttribute('value');
  } else {
    progress.value = 0;
  }

  let bytes;
  if (job.status === 'completed') {
    bytes = formatBytes(job.bytes);
  } else {
    bytes = `${formatBytes(read)}${job.total > 0 ? ` of ${formatBytes(job.total)}` : ''} read · ${formatBytes(job.bytes || 0)} stored`;
  }
  li.querySelector('.bytes').textContent = bytes;
  const meta = [];
  if (md.rows) {
    meta.push(`${Number(md.rows).toLocaleString('en')} rows`);
  }
  if (job.kind) {
    meta.push(job.kind);
  }
  const created = new Date(job.created_at);
  if (!Number.isNaN(created.getTime())) {
    meta.push(`started ${clock(created)}`);
  }
  li.querySelector('.meta').textContent = meta.join(' · ');

  let link = li.querySelector('a.download');
  if (job.status === 'completed') {
    if (!link) {
      link = document.createElement('a');
      link.className = 'download';
      link.href = exportURL(job.id, '/download');
      link.textContent = 'Download';
      li.querySelector('.actions').append(link);
    }
  } else if (link) {
    link.remove();
  }
  li.querySelector('.reason').textContent = job.status === 'failed' || job.status === 'cancelled' ? job.error || '' : '';
  renderContact(li);
}

// renderContact shows whether the page is in contact with a server about
// the export of li: when it is not, the status is "reconnecting…", the
// progress is greyed as out of date, and Cancel, which needs a server, is
// disabled.
function renderContact(li) {
  const f = followers.get(li.dataset.id);
  const lost = Boolean(f && f.lost);
  li.dataset.contact = lost ? 'lost' : 'ok';
  const live = isLive(li.dataset.status);
  li.querySelector('.status').textContent = lost ? 'reconnecting…' : li.dataset.status;
  const contact = li.querySelector('.contact');
  contact.textContent = lost
    ? `Reconnecting… last contact ${clock(f.lastContact)}; the status and progress shown are from then.`
    : '';
  const cancel = li.querySelector('.cancel');
  cancel.hidden = !live;
  cancel.disabled = !live || lost;
  cancel.title = lost ? 'No contact with the server: cancelling needs it' : '';
}

// show adds job to the list (at the top when prepend, else at the end) or
// updates its item, and follows it while it is live.
function show(job, prepend) {
  const list = $('#exports');
  let li = itemFor(job.id);
  if (!li) {
    li = createItem(job);
    if (prepend) {
      list.prepend(li);
    } else {
      list.append(li);
    }
  }
  if (newer(li, job)) {
    render(li, job);
  }
  $('#empty').hidden = list.children.length > 0;
  if (isLive(li.dataset.status)) {
    follow(job.id);
  } else {
    unfollow(job.id);
  }
}

// Following live exports.
//
// A follower is {id, gen, mode, lastContact, lost, attempt, lastEventId,
// conn, timer}: mode is 'stream' or 'poll'; lastContact the last time a
// server said anything about the export (an answer, an event, a
// heartbeat); lost whether the page is out of contact; conn the open
// stream, {abort}, so that a stale stream's callbacks do nothing.

function follow(id) {
  if (followers.has(id)) {
    return;
  }
  const f = {
    id, gen: generation, mode: 'poll', lastContact: new Date(), lost: false,
    attempt: 0, lastEventId: '', conn: null, timer: null,
  };
  followers.set(id, f);
  if (streamCount() < MAX_STREAMS) {
    f.mode = 'stream';
    openStream(f);
  } else {
    startPolling();
  }
}

function unfollow(id) {
  const f = followers.get(id);
  if (!f) {
    return;
  }
  followers.delete(id);
  stopFollower(f);
  const li = itemFor(id);
  if (li) {
    renderContact(li);
  }
  // Hand the free stream to a polled export.
  if (f.mode === 'stream') {
    for (const other of followers.values()) {
      if (other.mode === 'poll') {
        other.mode = 'stream';
        openStream(other);
        break;
      }
    }
  }
}

function stopFollower(f) {
  f.stopped = true;
  clearTimeout(f.timer);
  if (f.conn) {
    f.conn.abort.abort();
    f.conn = null;
  }
}

function streamCount() {
  let n = 0;
  for (const f of followers.values()) {
    n += f.mode === 'stream' ? 1 : 0;
  }
  return n;
}

// touch records contact with a server about f's export; if the page had
// lost it, the export is shown as in contact again.
function touch(f) {
  f.lastContact = new Date();
  f.attempt = 0;
  if (f.lost) {
    f.lost = false;
    const li = itemFor(f.id);
    if (li) {
      renderContact(li);
    }
  }
}

// lose marks f's export out of contact (why is for the console) and, for
// a stream, schedules the attempt to reach a server again.
function lose(f, why) {
  if (f.stopped) {
    return;
  }
  if (f.conn) {
    f.conn.abort.abort();
    f.conn = null;
  }
  if (!f.lost) {
    console.info(`export ${f.id}: lost contact (${why}); last contact ${clock(f.lastContact)}`);
    f.lost = true;
    const li = itemFor(f.id);
    if (li) {
      renderContact(li);
    }
  }
  if (f.mode === 'stream') {
    const wait = RETRY_MS[Math.min(f.attempt, RETRY_MS.length - 1)];
    f.attempt++;
    clearTimeout(f.timer);
    f.timer = setTimeout(() => reconnect(f), wait);
  }
}

// reconnect re-reads the export's status and, if it is still live,
// follows its stream again.
async function reconnect(f) {
  if (f.stopped) {
    return;
  }
  let job;
  try {
    job = await api('GET', exportURL(f.id), null, STALL_MS);
  } catch (err) {
    if (f.stopped) {
      return;
    }
    if (noContact(err) || err.status >= 500) {
      lose(f, err.message);
    } else {
      gone(f, err);
    }
    return;
  }
  if (f.stopped) {
    return;
  }
  touch(f);
  show(job, false); // unfollows it if it has ended
  if (!f.stopped) {
    openStream(f);
  }
}

// gone stops following an export the server refused to tell about (404:
// expired; 401: logged out elsewhere), and says why.
function gone(f, err) {
  unfollow(f.id);
  if (f.gen === generation) {
    showError(err);
  }
}

// openStream follows the export's event stream, from f.lastEventId on.
async function openStream(f) {
  const abort = new AbortController();
  const conn = { abort };
  f.conn = conn;
  const current = () => f.conn === conn && !f.stopped;
  const headers = { Accept: 'text/event-stream' };
  if (f.lastEventId) {
    headers['Last-Event-ID'] = f.lastEventId;
  }
  // lastContact is not moved until the server answers: the watchdog
  // (checkStalls) also catches a connection that never opens.
  let res;
  try {
    res = await fetch(exportURL(f.id, '/events'), {
      headers, credentials: 'same-origin', cache: 'no-store', signal: abort.signal,
    });
  } catch (err) {
    if (current()) {
      lose(f, `stream: ${err.message}`);
    }
    return;
  }
  if (!current()) {
    return;
  }
  if (res.status === 204) {
    // The page has the end already: re-read the status to show it.
    touch(f);
    reconnect(f);
    return;
  }
  if (!res.ok) {
    const err = await readProblem(res);
    if (!current()) {
      return;
    }
    if (noContact(err) || err.status >= 500) {
      lose(f, `stream: ${err.message}`);
    } else {
      gone(f, err);
    }
    return;
  }
  touch(f);
  try {
    await readEvents(res.body, () => current() && touch(f), (event) => {
      if (!current()) {
        return;
      }
      if (event.id) {
        f.lastEventId = event.id;
      }
      if (event.name === 'progress' || event.name === 'end') {
        if (f.gen === generation) {
          show(JSON.parse(event.data), false);
        }
        if (event.name === 'end') {
          unfollow(f.id);
        }
      } else if (event.name === 'error') {
        // The server could not watch the export (its Redis failed, say):
        // it is out of contact as much as if the server were gone.
        let detail = event.data;
        try {
          detail = JSON.parse(event.data).detail || detail;
        } catch (e) {
          // not JSON: keep the text
        }
        lose(f, `stream error: ${detail}`);
      }
    });
  } catch (err) {
    if (current()) {
      lose(f, `stream: ${err.message}`);
    }
    return;
  }
  if (current()) {
    // The stream ended before the export did: the server is shutting
    // down, or a proxy cut it.
    lose(f, 'the stream ended');
  }
}

// readEvents reads a Server-Sent Events body until it ends, calling
// onBytes for whatever arrives (an event, a heartbeat comment) and
// onEvent for each event, {name, data, id}.
async function readEvents(body, onBytes, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let event = { name: '', data: [], id: '' };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    onBytes();
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (event.data.length > 0) {
          onEvent({ name: event.name || 'message', data: event.data.join('\n'), id: event.id });
        }
        event = { name: '', data: [], id: '' };
        continue;
      }
      if (line.startsWith(':')) {
        continue; // a comment: the heartbeat
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) {
        val = val.slice(1);
      }
      if (field === 'event') {
        event.name = val;
      } else if (field === 'data') {
        event.data.push(val);
      } else if (field === 'id') {
        event.id = val;
      }
    }
  }
}

// checkStalls loses contact on the streams that brought nothing for
// STALL_MS, a connection that hangs included.
function checkStalls() {
  const now = Date.now();
  for (const f of followers.values()) {
    if (f.mode === 'stream' && f.conn && !f.lost && now - f.lastContact.getTime() > STALL_MS) {
      lose(f, `nothing for ${Math.round((now - f.lastContact.getTime()) / 1000)} s`);
    }
  }
}

function startPolling() {
  if (pollTimer === null) {
    pollTimer = setInterval(poll, POLL_MS);
  }
}

// poll reads the status of the exports followed by polling: each answer
// is contact, each failure to reach a server loses it.
async function poll() {
  const polled = [...followers.values()].filter((f) => f.mode === 'poll');
  if (polled.length === 0) {
    clearInterval(pollTimer);
    pollTimer = null;
    return;
  }
  if (polling) {
    return; // the last round still waits for an answer
  }
  polling = true;
  try {
    await pollRound(polled);
  } finally {
    polling = false;
  }
}

async function pollRound(polled) {
  for (const f of polled) {
    try {
      const job = await api('GET', exportURL(f.id), null, STALL_MS);
      if (!f.stopped) {
        touch(f);
        if (f.gen === generation) {
          show(job, false);
        }
      }
    } catch (err) {
      if (f.stopped) {
        continue;
      }
      if (noContact(err) || err.status >= 500) {
        lose(f, err.message);
      } else {
        gone(f, err);
      }
    }
  }
}

function reset() {
  generation++;
  for (const f of followers.values()) {
    stopFollower(f);
  }
  followers.clear();
  nextCursor = '';
  $('#exports').replaceChildren();
  $('#empty').hidden = false;
  $('#more').hidden = true;
}

// Actions.

function setUser(me) {
  currentUser = me ? me.id : '';
  $('#whoami').textContent = currentUser;
  $('#logout-button').hidden = !currentUser;
  // The operator's dashboard is exporterhttp's, for admins; this page
  // lists the user's own exports only, the admin's too.
  $('#admin-tools').hidden = !(me && me.admin);
  document.body.classList.toggle('logged-in', Boolean(currentUser));
  if (currentUser) {
    $('#login-user').value = currentUser;
  }
}

async function loadExports(more) {
  const gen = generation;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (more && nextCursor) {
    query.set('cursor', nextCursor);
  }
  const list = await api('GET', `${API}/?${query}`);
  if (gen !== generation) {
    return;
  }
  for (const job of list.exports) {
    show(job, false); // the page is newest first
  }
  nextCursor = list.next || '';
  $('#more').hidden = !nextCursor;
}

async function cancelExport(id) {
  clearError();
  try {
    show(await api('DELETE', exportURL(id)), false);
  } catch (err) {
    showError(err);
    if (err.problem && err.problem.export) {
      show(err.problem.export, false); // a 409 carries the export as it is
    }
  }
}

async function onLogin(e) {
  e.preventDefault();
  clearError();
  const id = $('#login-user').value.trim();
  try {
    await api('POST', '/login', { user: id });
    reset();
    setUser(await api('GET', '/me'));
    await loadExports(false);
  } catch (err) {
    showError(err);
  }
}

async function onLogout() {
  clearError();
  try {
    await api('POST', '/logout');
  } catch (err) {
    showError(err);
  }
  reset();
  setUser(null);
}

function onKind() {
  const option = $('#kind').selectedOptions[0];
  $('#rate').disabled = !(option && 'rate' in option.dataset);
}

async function onStart(e) {
  e.preventDefault();
  clearError();
  const kind = $('#kind').value;
  const args = {};
  const metadata = { 'content-type': 'text/csv' };
  const rows = $('#rows').value.trim();
  if (rows !== '') {
    args.rows = Number(rows);
    metadata.rows = rows;
  }
  const rate = $('#rate');
  if (!rate.disabled && rate.value.trim() !== '') {
    args.rows_per_second = Number(rate.value.trim());
  }
  const body = { kind, args, metadata };
  const filename = $('#filename').value.trim();
  if (filename !== '') {
    body.filename = filename;
  }
  try {
    show(await api('POST', `${API}/`, body), true);
  } catch (err) {
    showError(err);
  }
}

async function init() {
  $('#login-form').addEventListener('submit', onLogin);
  $('#logout-button').addEventListener('click', onLogout);
  $('#start-form').addEventListener('submit', onStart);
  $('#kind').addEventListener('change', onKind);
  $('#more').addEventListener('click', () => loadExports(true).catch(showError));
  onKind();
  setInterval(checkStalls, 500);
  try {
    setUser(await api('GET', '/me'));
    await loadExports(false);
  } catch (err) {
    if (err.status === 401) {
      setUser(null);
    } else {
      showError(err);
    }
  }
}

init();
