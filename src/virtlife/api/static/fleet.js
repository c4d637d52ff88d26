// The fleet page: every host and its VMs with their live state. Filled from
// /api/hosts and /api/vms, then kept current by the event stream with no reload; the
// New VM and Add host forms (manage.js) below it.
import { ApiError, actionBar, api, banner, el, follow, stateText, vmPage } from './common.js';
import { addHostForm, newVmForm, removeHostButton } from './manage.js';

const FLEET_ACTIONS = ['start', 'shutdown', 'reboot', 'suspend', 'resume', 'managedsave',
  'destroy'];
const fleet = document.getElementById('fleet');
const rows = new Map(); // "host/name" -> {vm, row}
let reloading = null;
const creator = newVmForm(() => reload());
document.querySelector('#new-vm .body').replaceChildren(creator.form);
document.querySelector('#add-host .body').replaceChildren(addHostForm(() => reload()));

function renderRow(entry) {
  const { vm } = entry;
  const message = entry.row ? entry.row.querySelector('.message').cloneNode(true)
    : el('td', { class: 'message' });
  const row = el('tr', { 'data-host': vm.host, 'data-vm': vm.name, class: `state-${vm.state}` },
    el('td', {}, el('a', { href: vmPage(vm.host, vm.name) }, vm.name)),
    el('td', { class: 'state' }, stateText(vm)),
    el('td', {}, `${vm.vcpus ?? '?'} vCPU, ${vm.memory_mib ?? '?'} MiB`),
    el('td', {}, actionBar(vm, FLEET_ACTIONS, (text, kind) => {
      const cell = rows.get(`${vm.host}/${vm.name}`)?.row.querySelector('.message');
      if (!cell) return;
      cell.textContent = text;
      cell.className = `message ${kind}`;
    })),
    message);
  if (entry.row) entry.row.replaceWith(row);
  entry.row = row;
  return row;
}

async function load() {
  const [hosts, listing] = await Promise.all([api('GET', '/api/hosts'), api('GET', '/api/vms')]);
  rows.clear();
  const sections = hosts.map((host) => {
    const vms = listing.vms.filter((vm) => vm.host === host.name);
    const body = el('tbody');
    for (const vm of vms.sort((a, b) => a.name.localeCompare(b.name))) {
      const entry = { vm };
      rows.set(`${vm.host}/${vm.name}`, entry);
      body.append(renderRow(entry));
    }
    const status = host.reachable ? el('span', { class: 'muted' }, host.uri)
      : el('span', { class: 'error' }, `unreachable: ${host.problem}`);
    return el('section', { class: 'host', 'data-host': host.name },
      el('h2', {}, host.name, ' ', status, ' ',
        removeHostButton(host.name, (text) => banner(text, 'error'), reload)),
      vms.length ? el('table', {},
        el('thead', {}, el('tr', {}, ['VM', 'State', 'Size', 'Actions', ''].map(
          (h) => el('th', {}, h)))), body)
        : el('p', { class: 'muted' }, host.reachable ? 'No VMs.' : ''));
  });
  const chosen = creator.hostSelect.value;
  creator.hostSelect.replaceChildren(...hosts.map((h) => el('option',
    { value: h.name, selected: h.name === chosen }, h.name)));
  fleet.replaceChildren(...(sections.length ? sections
    : [el('p', {}, 'No hosts: add one with `virtlife host add NAME URI`.')]));
}

function reload() {
  if (!reloading) {
    reloading = new Promise((resolve) => setTimeout(resolve, 300))
      .then(load).catch(showError).finally(() => { reloading = null; });
  }
}

function showError(err) {
  banner(err instanceof ApiError ? err.message : String(err), 'error');
}

let connected = false;
follow({
  hello: () => {
    if (connected) reload(); // reconnected: catch up with what was missed
    connected = true;
    banner('');
  },
  state: (message) => {
    const entry = rows.get(`${message.host}/${message.name}`);
    if (!entry) { reload(); return; }
    entry.vm = { ...entry.vm, ...message };
    renderRow(entry);
  },
  event: (message) => {
    if (message.kind === 'host' || ['defined', 'undefined'].includes(message.event)) reload();
  },
  lagged: reload,
  lost: () => banner('Event stream lost; reconnecting…', 'error'),
});
load().catch(showError);
