// A VM's page: state and reason with its lifecycle buttons (live from the event
// stream), CD-ROMs and VNC graphics (manage.js), details, guest agent information,
// snapshots and history. Sections whose routes are missing or fail say so in place;
// the rest of the page still works.
import {
  ACTIONS, ApiError, actionBar, api, banner, el, follow, page, stateText, vmApi,
} from './common.js';
import { setupGraphics, setupMedia } from './manage.js';
import { setupMigrate } from './migrate.js';

const { host, name } = page;
let vm = null;
const refreshers = {}; // the CD-ROM and graphics sections' reloads, once set up

function body(id) {
  return document.querySelector(`#${id} .body`);
}

// Any JSON as HTML: a list of objects becomes a table, an object a definition list.
function show(value) {
  if (Array.isArray(value)) {
    if (!value.length) return el('span', { class: 'muted' }, 'none');
    if (value.every((v) => v && typeof v === 'object' && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return el('table', {}, el('thead', {}, el('tr', {}, keys.map((k) => el('th', {}, k)))),
        el('tbody', {}, value.map((v) => el('tr', {}, keys.map((k) => el('td', {}, show(v[k])))))));
    }
    return value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
  }
  if (value && typeof value === 'object') {
    return el('dl', {}, Object.entries(value).map(([k, v]) => [el('dt', {}, k), el('dd', {}, show(v))]));
  }
  return value === null || value === undefined || value === '' ? '—' : String(value);
}

function report(text, kind) {
  const line = document.getElementById('action-message');
  if (!line) return;
  line.textContent = text;
  line.className = `message ${kind}`;
}

function renderState() {
  const message = document.getElementById('action-message');
  body('state').replaceChildren(
    el('p', { class: `state state-${vm.state}`, id: 'vm-state' }, stateText(vm)),
    actionBar({ ...vm, host, name }, Object.keys(ACTIONS), report),
    message || el('p', { id: 'action-message', class: 'message' }));
  const active = !['shutoff', 'saved', 'undefined'].includes(vm.state);
  for (const id of ['open-vnc', 'open-serial', 'download-vv']) {
    document.getElementById(id).classList.toggle('inactive', !active);
  }
}

async function loadVm() {
  vm = await api('GET', vmApi(host, name));
  renderState();
  const { allowed, label, state, reason, host: _h, name: _n, ...details } = vm;
  body('details').replaceChildren(show(details));
}

async function loadAgent() {
  const parts = ['info', 'osinfo', 'ifaddr', 'fsinfo', 'time'];
  const titles = { info: 'Agent', osinfo: 'Operating system', ifaddr: 'Network interfaces',
    fsinfo: 'Filesystems', time: 'Guest time' };
  let first;
  try {
    first = await api('GET', vmApi(host, name, '/agent/info'));
  } catch (err) {
    const why = err.status === 404 && err.code === 'not_found'
      ? 'this server has no guest agent routes yet' : err.message;
    body('agent').replaceChildren(el('p', { class: 'muted', id: 'agent-unavailable' },
      `Guest agent not available: ${why}`));
    return;
  }
  const results = await Promise.allSettled(parts.slice(1).map(
    (part) => api('GET', vmApi(host, name, `/agent/${part}`))));
  const blocks = [[parts[0], { status: 'fulfilled', value: first }],
    ...parts.slice(1).map((part, i) => [part, results[i]])];
  body('agent').replaceChildren(...blocks.map(([part, result]) => el('div', { class: 'agent-part' },
    el('h3', {}, titles[part]),
    result.status === 'fulfilled' ? show(result.value)
      : el('p', { class: 'error' }, result.reason.message))));
}

async function loadSnapshots() {
  try {
    const snapshots = await api('GET', vmApi(host, name, '/snapshots'));
    body('snapshots').replaceChildren(show(snapshots.snapshots ?? snapshots));
  } catch (err) {
    body('snapshots').replaceChildren(el('p', { class: 'muted' },
      err.status === 404 && err.code === 'not_found'
        ? 'Snapshots are not served by this server yet.' : err.message));
  }
}

async function loadHistory() {
  const entries = await api('GET', vmApi(host, name, '/history?limit=30'));
  body('history').replaceChildren(entries.length ? el('table', {},
    el('thead', {}, el('tr', {}, ['Started', 'Operation', 'Outcome', 'Took', 'Detail', 'By'].map(
      (h) => el('th', {}, h)))),
    el('tbody', {}, entries.map((e) => el('tr', { class: `outcome-${e.outcome}` },
      el('td', {}, new Date(e.started).toLocaleString()), el('td', {}, e.operation),
      el('td', {}, e.outcome), el('td', {}, `${e.duration_s} s`), el('td', {}, e.detail),
      el('td', {}, [e.user, e.process].filter(Boolean).join(' via '))))))
    : el('p', { class: 'muted' }, 'Nothing recorded yet.'));
}

function guarded(load) {
  return load().catch((err) => banner(err instanceof ApiError ? err.message : String(err), 'error'));
}

follow({
  state: (message) => {
    if (message.host !== host || message.name !== name) return;
    vm = { ...vm, ...message };
    renderState();
    guarded(loadVm);
    guarded(loadHistory);
    for (const refresh of Object.values(refreshers)) guarded(refresh);
  },
  event: (message) => {
    if (message.host === host && message.vm === name && message.kind === 'agent') guarded(loadAgent);
  },
  operation: (message) => {
    if (message.vm === `${host}/${name}`) guarded(loadHistory);
  },
  lost: () => banner('Event stream lost; reconnecting…', 'error'),
  hello: () => banner(''),
});
guarded(loadVm);
guarded(loadAgent);
guarded(loadSnapshots);
for (const [id, setup] of [['media', setupMedia], ['graphics', setupGraphics]]) {
  guarded(async () => { refreshers[id] = await setup(host, name, body(id)); });
}
guarded(loadHistory);
guarded(() => setupMigrate(host, name, body('migrate')));
