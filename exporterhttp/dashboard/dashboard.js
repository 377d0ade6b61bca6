// The exports dashboard of exporterhttp (Config.Dashboard). It polls
// dashboard/exports and dashboard/instances every two seconds, relative to
// the page (<mount>/dashboard), and cancels and downloads through the
// export routes (<mount>/<id>). It builds every element with textContent:
// nothing the server sends is read as HTML.
'use strict';

const refreshEvery = 2000; // ms between the end of a refresh and the next
const requestTimeout = 5000; // ms a request may take before it counts as lost
const pageSize = 50;

const $ = (sel) => document.querySelector(sel);

const state = {
  cursors: [''], // the cursor of every page up to the one shown, newest first
  next: '', // the cursor of the page after the one shown; '' after the last
  filter: { status: '', owner: '' },
  jobs: [], // the page shown
  lastUpdate: null, // when both lists were last read
  cancelling: new Set(), // ids whose DELETE has not been answered
  timer: 0,
  seq: 0, // the number of the latest refresh; an older one's answer is dropped
};

// Requests.

class APIError extends Error {
  constructor(message, status, problem) {
    super(message);
    this.status = status; // 0 when no server answered
    this.problem = problem || {};
  }
}

// api makes a request and returns the decoded JSON body, or throws an
// APIError with the problem document's detail.
async function api(method, url) {
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
      signal: AbortSignal.timeout(requestTimeout),
    });
  } catch (err) {
    const why = err.name === 'TimeoutError' ? `no answer within ${requestTimeout / 1000} s` : 'the server cannot be reached';
    throw new APIError(why, 0);
  }
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch (e) {
      problem = null;
    }
    const message = (problem && (problem.detail || problem.title)) || `${res.status} ${res.statusText}`;
    throw new APIError(message, res.status, problem);
  }
  return res.json();
}

// Formatting.

// formatBytes writes n in binary (IEC) units with one decimal, as the
// library's other pages and exportctl do: 512 B, 3.0 MiB.
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

const two = (n) => String(n).padStart(2, '0');

// clock writes a time as HH:MM:SS, 24-hour, local time.
function clock(d) {
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// stamp writes a time as YYYY-MM-DD HH:MM:SS, local time.
function stamp(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    return '';
  }
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(d)}`;
}

// since writes a time as HH:MM:SS when it is today, else as stamp does.
function since(iso) {
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? clock(d) : stamp(iso);
}

// failuresText writes failures by reason, the most frequent first.
function failuresText(failures) {
  const entries = Object.entries(failures || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return entries.length ? entries.map(([code, n]) => `${code} ${n}`).join(', ') : 'none';
}

// readOf is the bytes read from the export's source (job.read), which
// moves inside a chunk, where job.bytes (stored) moves a chunk at a time.
const readOf = (job) => Math.max(job.read || 0, job.bytes || 0);

const isLive = (status) => status === 'pending' || status === 'running';

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

// The exports.

function exportsURL() {
  const q = new URLSearchParams({ limit: String(pageSize) });
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor) {
    q.set('cursor', cursor);
  }
  if (state.filter.status) {
    q.set('status', state.filter.status);
  }
  if (state.filter.owner) {
    q.set('owner', state.filter.owner);
  }
  return `dashboard/exports?${q}`;
}

function progressCell(job) {
  const td = el('td', 'progress');
  const read = readOf(job);
  td.dataset.read = String(read);
  if (job.total > 0) {
    const bar = el('progress');
    bar.max = job.total;
    bar.value = job.status === 'completed' ? job.total : Math.min(read, job.total);
    td.append(bar, el('span', 'bytes', `${formatBytes(read)} / ${formatBytes(job.total)}`));
  } else if (read > 0 || job.status === 'completed') {
    td.append(el('span', 'bytes', job.status === 'completed' ? formatBytes(job.bytes) : `${formatBytes(read)} read`));
  } else {
    td.append(el('span', 'bytes muted', '–'));
  }
  return td;
}

function actionsCell(job) {
  const td = el('td', 'actions');
  if (isLive(job.status)) {
    const busy = state.cancelling.has(job.id);
    const button = el('button', 'cancel', busy ? 'Cancelling…' : 'Cancel');
    button.type = 'button';
    button.disabled = busy;
    button.addEventListener('click', () => cancelExport(job.id));
    td.append(button);
  } else if (job.status === 'completed') {
    const a = el('a', 'download', 'Download');
    a.href = `${encodeURIComponent(job.id)}/download`;
    td.append(a);
  }
  return td;
}

function exportRow(job) {
  const tr = el('tr', 'export');
  tr.dataset.id = job.id;
  tr.dataset.status = job.status;
  tr.dataset.owner = job.owner;
  const id = el('td', 'id', job.id.slice(0, 8));
  id.title = job.id;
  const status = el('td', 'status');
  status.append(el('span', `badge ${job.status}`, job.status));
  const code = el('td', 'code', job.error_code || '');
  if (job.error) {
    code.title = job.error;
  }
  tr.append(
    id,
    el('td', 'owner', job.owner),
    el('td', 'kind', job.kind || ''),
    status,
    progressCell(job),
    el('td', 'created', stamp(job.created_at)),
    el('td', 'attempt num', job.attempt ? String(job.attempt) : ''),
    code,
    actionsCell(job),
  );
  return tr;
}

function renderExports() {
  $('#exports tbody').replaceChildren(...state.jobs.map(exportRow));
  const empty = $('#exports-empty');
  empty.hidden = state.jobs.length > 0;
  empty.textContent = state.next ? 'No export on this page matches; older ones may.' : 'No export matches.';
  $('#page').textContent = `Page ${state.cursors.length}`;
  $('#newer').disabled = state.cursors.length === 1;
  $('#older').disabled = !state.next;
}

function showNotice(text) {
  const n = $('#notice');
  n.textContent = text;
  n.hidden = !text;
}

async function cancelExport(id) {
  state.cancelling.add(id);
  renderExports();
  try {
    const job = await api('DELETE', encodeURIComponent(id));
    state.jobs = state.jobs.map((j) => (j.id === job.id ? job : j));
    showNotice('');
  } catch (err) {
    if (err.status === 409 && err.problem.export) {
      const job = err.problem.export;
      state.jobs = state.jobs.map((j) => (j.id === job.id ? job : j));
      showNotice(`Export ${id.slice(0, 8)} had already ${job.status}.`);
    } else {
      showNotice(`Cancelling ${id.slice(0, 8)} failed: ${err.message}`);
    }
  } finally {
    state.cancelling.delete(id);
  }
  renderExports();
  refresh();
}

// The instances.

function instanceRow(inst) {
  const tr = el('tr', 'instance');
  tr.dataset.id = inst.id;
  const id = el('td', 'id', inst.id);
  id.title = `host ${inst.host}, pid ${inst.pid}`;
  tr.append(
    id,
    el('td', 'kinds', (inst.kinds || []).join(', ')),
    el('td', 'load num', `${inst.running} / ${inst.pending} / ${inst.max_running}`),
    el('td', 'throughput num', `${formatBytes(inst.throughput)}/s`),
    el('td', 'completed num', String(inst.completed)),
    el('td', 'failed num', String(inst.failed)),
    el('td', 'cancelled num', String(inst.cancelled)),
    el('td', 'failures', failuresText(inst.failures)),
    el('td', 'stored num', formatBytes(inst.bytes_stored)),
    el('td', 'started', since(inst.started)),
  );
  return tr;
}

function renderInstances(body) {
  const empty = $('#instances-empty');
  if (!body) {
    $('#instances tbody').replaceChildren();
    empty.textContent = 'The store keeps no instance reports: no figures to show.';
    empty.hidden = false;
    return;
  }
  $('#instances tbody').replaceChildren(...body.instances.map(instanceRow));
  empty.textContent = 'No instance reports: none is running, or none has started an export yet.';
  empty.hidden = body.instances.length > 0;
  const t = body.totals;
  const set = (name, text) => {
    $(`#totals [data-total="${name}"]`).textContent = text;
  };
  set('instances', String(t.instances));
  set('running', `${t.running} / ${t.max_running}`);
  set('pending', String(t.pending));
  set('throughput', `${formatBytes(t.throughput)}/s`);
  set('completed', String(t.completed));
  set('failed', String(t.failed));
  set('cancelled', String(t.cancelled));
  set('failures', failuresText(t.failures));
}

// Refreshing.

// setLive says whether what the page shows is live. After a failure the
// data stays on screen, marked stale, with the time it was read.
function setLive(err) {
  const live = $('#live');
  if (!err) {
    live.dataset.state = 'live';
    live.textContent = `Live: updated at ${clock(state.lastUpdate)}.`;
    document.body.classList.remove('stale');
    return;
  }
  const last = state.lastUpdate ? `last update at ${clock(state.lastUpdate)}` : 'nothing read yet';
  let why;
  if (!(err instanceof APIError)) {
    why = `The page failed (${err.message})`;
  } else if (err.status === 0) {
    why = `Lost contact (${err.message})`;
  } else if (err.status === 401 || err.status === 403) {
    why = `Refused (${err.status}: ${err.message})`;
  } else {
    why = `The server failed (${err.status}: ${err.message})`;
  }
  live.dataset.state = 'lost';
  live.textContent = `${why}; retrying every ${refreshEvery / 1000} s; ${last}. What is shown is not live.`;
  document.body.classList.add('stale');
}

// refresh reads both lists and shows them, then plans the next refresh.
// A refresh that a newer one overtook (a filter changed) drops its answer.
async function refresh() {
  clearTimeout(state.timer);
  const seq = ++state.seq;
  let err = null;
  try {
    const [list, instances] = await Promise.all([
      api('GET', exportsURL()),
      api('GET', 'dashboard/instances').catch((e) => {
        if (e.status === 501) {
          return null; // a store without reports: no figures, not an error
        }
        throw e;
      }),
    ]);
    if (seq !== state.seq) {
      return;
    }
    state.jobs = list.exports;
    state.next = list.next || '';
    state.lastUpdate = new Date();
    renderExports();
    renderInstances(instances);
  } catch (e) {
    if (seq !== state.seq) {
      return;
    }
    err = e;
  }
  setLive(err);
  state.timer = setTimeout(refresh, refreshEvery);
}

function onFilter(e) {
  e.preventDefault();
  state.filter = { status: $('#status').value, owner: $('#owner').value.trim() };
  state.cursors = [''];
  state.next = '';
  refresh();
}

function init() {
  $('#filters').addEventListener('submit', onFilter);
  $('#status').addEventListener('change', onFilter);
  $('#older').addEventListener('click', () => {
    if (state.next) {
      state.cursors.push(state.next);
      refresh();
    }
  });
  $('#newer').addEventListener('click', () => {
    if (state.cursors.length > 1) {
      state.cursors.pop();
      refresh();
    }
  });
  refresh();
}

init();
