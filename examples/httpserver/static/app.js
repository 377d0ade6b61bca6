'use strict';

// The page of the exporter demo: plain DOM and fetch, no build step.
//
// Live exports are followed with an EventSource on /exports/{id}/events.
// Over HTTP/1.1 a browser opens at most 6 connections to a host and each
// EventSource holds one, so at most MAX_STREAMS exports are streamed at a
// time; the others are polled (GET /exports/{id}) until a stream is free,
// which keeps connections free for starting, cancelling and downloading.
const MAX_STREAMS = 4;
const POLL_MS = 1000;
const PAGE_SIZE = 20;

const streams = new Map(); // export id -> EventSource
const polled = new Set(); // ids of live exports followed by polling
const noStream = new Set(); // ids whose stream was refused: polled only
let pollTimer = null;
let nextCursor = '';
let currentUser = '';
// generation changes when the user does; answers for an older one are dropped.
let generation = 0;

const $ = (selector) => document.querySelector(selector);

class APIError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

// api calls the JSON API and returns the decoded body, or throws an
// APIError with the server's message.
async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const message = data && data.error ? data.error : `${res.status} ${res.statusText}`;
    throw new APIError(message, res.status, data);
  }
  return data;
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

// readOf is the bytes read from the export's source (job.read), which
// moves inside a chunk, where job.bytes moves a chunk at a time.
const readOf = (job) => Math.max(job.read || 0, job.bytes);

function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
}

const isLive = (status) => status === 'pending' || status === 'running';
const rank = { pending: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };

function progressOf(job) {
  if (job.status === 'completed') {
    return 1;
  }
  if (!job.total) {
    return 0;
  }
  return Math.min(1, readOf(job) / job.total);
}

// The list.

function itemFor(id) {
  return document.querySelector(`#exports li.export[data-id="${CSS.escape(id)}"]`);
}

function createItem(job) {
  const li = document.createElement('li');
  li.className = 'export';
  li.dataset.id = job.id;
  // A fixed template: job fields are set with textContent below.
  li.innerHTML = `
    <div class="line">
      <span class="filename"></span>
      <span class="status"></span>
    </div>
    <progress class="progress" max="1" value="0"></progress>
    <div class="line details">
      <span class="bytes"></span>
      <span class="meta"></span>
      <span class="actions"><button type="button" class="cancel">Cancel</button></span>
    </div>
    <div class="reason"></div>`;
  li.querySelector('.cancel').addEventListener('click', () => cancelExport(job.id));
  return li;
}

// newer reports whether job is a later snapshot than the one li shows:
// statuses only move forward and bytes never decrease, so a late answer
// (a poll, a page load) never takes an item back.
function newer(li, job) {
  const shown = li.dataset.status;
  if (!shown) {
    return true;
  }
  if (rank[job.status] !== rank[shown]) {
    return rank[job.status] > rank[shown];
  }
  return !isLive(shown) ? false : readOf(job) >= Number(li.dataset.bytes || 0);
}

function render(li, job) {
  li.dataset.status = job.status;
  li.dataset.bytes = String(readOf(job));
  const md = job.metadata || {};
  li.querySelector('.filename').textContent = md.filename || job.id;
  li.querySelector('.filename').title = job.id;
  li.querySelector('.status').textContent = job.status;
  const value = progressOf(job);
  const progress = li.querySelector('.progress');
  progress.value = value;
  progress.setAttribute('value', String(value));
  progress.title = `${Math.round(100 * value)}%`;
  li.querySelector('.bytes').textContent = job.total
    ? `${formatBytes(readOf(job))} of ${formatBytes(job.total)}`
    : formatBytes(readOf(job));
  const meta = [];
  if (md.rows) {
    meta.push(`${Number(md.rows).toLocaleString()} rows`);
  }
  if (job.owner && job.owner !== currentUser) {
    meta.push(`by ${job.owner}`);
  }
  meta.push(`started ${formatTime(job.created_at)}`);
  li.querySelector('.meta').textContent = meta.join(' · ');

  const live = isLive(job.status);
  const cancel = li.querySelector('.cancel');
  cancel.hidden = !live;
  cancel.disabled = !live;
  let link = li.querySelector('a.download');
  if (job.status === 'completed') {
    if (!link) {
      link = document.createElement('a');
      link.className = 'download';
      link.href = `/exports/${encodeURIComponent(job.id)}/download`;
      link.textContent = 'Download';
      li.querySelector('.actions').append(link);
    }
  } else if (link) {
    link.remove();
  }
  li.querySelector('.reason').textContent = job.status === 'failed' || job.status === 'cancelled' ? job.error || '' : '';
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

function follow(id) {
  if (streams.has(id)) {
    return;
  }
  if (streams.size < MAX_STREAMS && !noStream.has(id)) {
    openStream(id);
  } else if (!polled.has(id)) {
    polled.add(id);
    if (pollTimer === null) {
      pollTimer = setInterval(poll, POLL_MS);
    }
  }
}

function openStream(id) {
  polled.delete(id);
  const gen = generation;
  const es = new EventSource(`/exports/${encodeURIComponent(id)}/events`);
  streams.set(id, es);
  es.addEventListener('job', (e) => {
    if (gen === generation) {
      show(JSON.parse(e.data), false);
    }
  });
  es.addEventListener('end', () => unfollow(id));
  es.addEventListener('error', (e) => {
    if (e.data) {
      // An error the server sent on the stream.
      if (gen === generation) {
        showError(JSON.parse(e.data).error);
      }
      unfollow(id);
    } else if (es.readyState === EventSource.CLOSED) {
      // The stream was refused: poll this one instead.
      unfollow(id);
      noStream.add(id);
      if (gen === generation) {
        follow(id);
      }
    }
    // Otherwise the connection dropped (a server restarting, say) and the
    // browser reconnects by itself.
  });
}

function unfollow(id) {
  const es = streams.get(id);
  if (es) {
    es.close();
    streams.delete(id);
  }
  polled.delete(id);
  // Hand the free stream to a polled export.
  for (const other of polled) {
    if (streams.size >= MAX_STREAMS) {
      break;
    }
    if (!noStream.has(other)) {
      openStream(other);
    }
  }
}

async function poll() {
  if (polled.size === 0) {
    clearInterval(pollTimer);
    pollTimer = null;
    return;
  }
  const gen = generation;
  for (const id of [...polled]) {
    try {
      const job = await api('GET', `/exports/${encodeURIComponent(id)}`);
      if (gen === generation) {
        show(job, false);
      }
    } catch (err) {
      if (err.status === 404 || err.status === 401) {
        polled.delete(id);
      }
    }
  }
}

function reset() {
  generation++;
  for (const es of streams.values()) {
    es.close();
  }
  streams.clear();
  polled.clear();
  noStream.clear();
  nextCursor = '';
  $('#exports').replaceChildren();
  $('#empty').hidden = false;
  $('#more').hidden = true;
}

// Actions.

function setUser(id) {
  currentUser = id || '';
  $('#whoami').textContent = currentUser;
  $('#logout-button').hidden = !currentUser;
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
  const list = await api('GET', `/exports?${query}`);
  if (gen !== generation) {
    return;
  }
  for (const job of list.jobs) {
    show(job, false); // the page is newest first
  }
  nextCursor = list.next || '';
  $('#more').hidden = !nextCursor;
}

async function cancelExport(id) {
  clearError();
  try {
    show(await api('DELETE', `/exports/${encodeURIComponent(id)}`), false);
  } catch (err) {
    showError(err);
    if (err.status === 409) {
      api('GET', `/exports/${encodeURIComponent(id)}`).then((job) => show(job, false), () => {});
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
    setUser(id);
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
  setUser('');
}

async function onStart(e) {
  e.preventDefault();
  clearError();
  const body = {};
  const rows = $('#rows').value.trim();
  if (rows !== '') {
    body.rows = Number(rows);
  }
  const rate = $('#rate').value.trim();
  if (rate !== '') {
    body.rows_per_second = Number(rate);
  }
  const filename = $('#filename').value.trim();
  if (filename !== '') {
    body.filename = filename;
  }
  try {
    show(await api('POST', '/exports', body), true);
  } catch (err) {
    showError(err);
  }
}

async function init() {
  $('#login-form').addEventListener('submit', onLogin);
  $('#logout-button').addEventListener('click', onLogout);
  $('#start-form').addEventListener('submit', onStart);
  $('#more').addEventListener('click', () => loadExports(true).catch(showError));
  try {
    const me = await api('GET', '/me');
    setUser(me.id);
    await loadExports(false);
  } catch (err) {
    if (err.status === 401) {
      setUser('');
    } else {
      showError(err);
    }
  }
}

init();
