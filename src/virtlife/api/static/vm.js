// A VM's page: state and reason with its lifecycle buttons (live from the event
// stream), CD-ROMs and VNC graphics (manage.js), details, guest agent information,
// snapshots and history. Sections whose routes are missing or fail say so in place;
// the rest of the page still works.
//
// The page follows the VM by its UUID (/vm/UUID): it asks the API by HOST/UUID, and
// when the VM shows up at another host (a migration, a move) or under another name,
// the page goes with it and reloads its sections there. A page by HOST/NAME (a VM
// that was not found when it was asked for) stays with that name.
import {
  ACTIONS, ApiError, actionBar, api, banner, el, follow, movedTo, page, stateText, vmApi,
  vmPage,
} from './common.js';
import { setupGraphics, setupMedia } from './manage.js';
import { setupMigrate } from './migrate.js';

const { uuid } = page;
let { host, name } = page;
let vm = null;
const refreshers = {}; // the CD-ROM and graphics sections' reloads, once set up
const ref = () => uuid || name; // how the API is asked for this VM at `host`

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
    actionBar({ ...vm, host, name, ref: ref() }, Object.keys(ACTIONS), report),
    message || el('p', { id: 'action-message', class: 'message' }));
  const active = !['shutoff', 'saved', 'undefined'].includes(vm.state);
  for (const id of ['open-vnc', 'open-serial', 'download-vv']) {
    document.getElementById(id).classList.toggle('inactive', !active);
  }
}

// Where the VM is now shown: the crumbs, the title and the console links.
function showPlace() {
  document.getElementById('vm-host').textContent = host;
  document.getElementById('vm-name').textContent = name;
  document.title = `${name} · virtlife`;
  document.body.dataset.host = host;
  document.body.dataset.name = name;
  document.getElementById('open-vnc').href = vmPage(host, name, '/vnc');
  document.getElementById('open-serial').href = vmPage(host, name, '/serial');
  document.getElementById('download-vv').href = vmApi(host, name, '/viewer.vv');
}

// The host a VM of this UUID is on: where it runs, if it is defined on two.
async function findHost() {
  const listing = await api('GET', '/api/vms');
  let found = null;
  for (const row of listing.vms) {
    if (row.uuid === uuid && (!found || movedTo(found, row))) found = row;
  }
  if (!found) throw new ApiError(404, 'not_found', `no VM with the UUID ${uuid} on any host`);
  host = found.host;
  name = found.name;
  showPlace();
}

async function loadVm() {
  vm = await api('GET', vmApi(host, ref()));
  if (vm.name !== name) { // renamed
    name = vm.name;
    showPlace();
  }
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
    first = await api('GET', vmApi(host, ref(), '/agent/info'));
  } catch (err) {
    const why = err.status === 404 && err.code === 'not_found'
      ? 'this server has no guest agent routes yet' : err.message;
    body('agent').replaceChildren(el('p', { class: 'muted', id: 'agent-unavailable' },
      `Guest agent not available: ${why}`));
    return;
  }
  const results = await Promise.allSettled(parts.slice(1).map(
    (part) => api('GET', vmApi(host, ref(), `/agent/${part}`))));
  const blocks = [[parts[0], { status: 'fulfilled', value: first }],
    ...parts.slice(1).map((part, i) => [part, results[i]])];
  body('agent').replaceChildren(...blocks.map(([part, result]) => el('div', { class: 'agent-part' },
    el('h3', {}, titles[part]),
    result.status === 'fulfilled' ? show(result.value)
      : el('p', { class: 'error' }, result.reason.message))));
}

async function loadSnapshots() {
  try {
    const snapshots = await api('GET', vmApi(host, ref(), '/snapshots'));
    body('snapshots').replaceChildren(show(snapshots.snapshots ?? snapshots));
  } catch (err) {
    body('snapshots').replaceChildren(el('p', { class: 'muted' },
      err.status === 404 && err.code === 'not_found'
        ? 'Snapshots are not served by this server yet.' : err.message));
  }
}

async function loadHistory() {
  const entries = await api('GET', vmApi(host, ref(), '/history?limit=30'));
  body('history').replaceChildren(entries.length ? el('table', {},
    el('thead', {}, el('tr', {}, ['Started', 'Operation', 'Outcome', 'Took', 'Detail', 'By'].map(
      (h) => el('th', {}, h)))),
    el('tbody', {}, entries.map((e) => el('tr', { class: `outcome-${e.outcome}` },
      el('td', {}, new Date(e.started).toLocaleString()), el('td', {}, e.operation),
      el('td', {}, e.outcome), el('td', {}, `${e.duration_s} s`), el('td', {}, e.detail),
      el('td', {}, [e.user, e.process].filter(Boolean).join(' via '))))))
    : el('p', { class: 'muted' }, 'Nothing recorded yet.'));
}

// Counts the VM's moves: what was asked of its previous host and fails (it is gone
// from there) is not this page's error any more.
let moves = 0;

function guarded(load) {
  const at = moves;
  return load().catch((err) => {
    if (at === moves) banner(err instanceof ApiError ? err.message : String(err), 'error');
  });
}

// This VM's own messages: by UUID wherever it is, or by its name at its host.
const mine = (msgHost, msgName, msgUuid) => (uuid ? msgUuid === uuid
  : msgHost === host && msgName === name);

function loadAll() {
  guarded(loadVm);
  guarded(loadAgent);
  guarded(loadSnapshots);
  for (const [id, setup] of [['media', setupMedia], ['graphics', setupGraphics]]) {
    guarded(async () => { refreshers[id] = await setup(host, ref(), body(id)); });
  }
  guarded(loadHistory);
  guarded(() => setupMigrate(host, ref(), body('migrate'), name));
}

follow({
  state: (message) => {
    if (!mine(message.host, message.name, message.uuid)) return;
    if (message.host !== host) {
      if (!vm || !movedTo(vm, message)) return; // what is left behind where it was
      moves += 1;
      host = message.host;
      name = message.name;
      vm = { ...vm, ...message };
      for (const id of Object.keys(refreshers)) delete refreshers[id]; // the old host's
      showPlace();
      renderState();
      banner(`${name} is now on ${host}`);
      loadAll();
      return;
    }
    if (uuid && message.state === 'undefined') { // gone from here: moved, or gone
      moves += 1;
      guarded(async () => { await findHost(); loadAll(); });
      return;
    }
    vm = { ...vm, ...message };
    if (message.name !== name) { name = message.name; showPlace(); }
    renderState();
    guarded(loadVm);
    guarded(loadHistory);
    for (const refresh of Object.values(refreshers)) guarded(refresh);
  },
  event: (message) => {
    if (message.host === host && mine(message.host, message.vm, message.uuid)
        && message.kind === 'agent') guarded(loadAgent);
  },
  operation: (message) => {
    const [, said] = (message.vm || '').split(/\/(.*)/s);
    if (message.vm === `${host}/${name}` || (uuid && said === uuid)) guarded(loadHistory);
  },
  lost: () => banner('Event stream lost; reconnecting…', 'error'),
  hello: () => banner(''),
});
if (uuid) {
  guarded(async () => { await findHost(); loadAll(); });
} else {
  loadAll();
}
