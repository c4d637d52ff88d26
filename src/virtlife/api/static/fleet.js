// The fleet page: every host and its VMs with their live state. Filled from
// /api/hosts and /api/vms, then kept current by the event stream with no reload; the
// New VM and Add host forms (manage.js) below it. A VM's row is keyed by its UUID:
// a VM that moves to another host (or is renamed) is one row that changes host.
import {
  ApiError, INACTIVE, actionBar, api, banner, el, follow, movedTo, stateText, vmPageOf,
} from './common.js';
import { addHostForm, newVmForm, removeHostButton } from './manage.js';

const FLEET_ACTIONS = ['start', 'shutdown', 'reboot', 'suspend', 'resume', 'managedsave',
  'destroy'];
const fleet = document.getElementById('fleet');
const rows = new Map(); // the VM's UUID -> {vm, row}
const keyOf = (vm) => vm.uuid || `${vm.host}/${vm.name}`;
let reloading = null;
const creator = newVmForm(() => reload());
document.querySelector('#new-vm .body').replaceChildren(creator.form);
document.querySelector('#add-host .body').replaceChildren(addHostForm(() => reload()));

function renderRow(entry) {
  const { vm } = entry;
  const message = entry.row ? entry.row.querySelector('.message').cloneNode(true)
    : el('td', { class: 'message' });
  const row = el('tr', { 'data-host': vm.host, 'data-vm': vm.name, 'data-uuid': vm.uuid,
    class: `state-${vm.state}` },
    el('td', {}, el('a', { href: vmPageOf(vm) }, vm.name)),
    el('td', { class: 'state' }, stateText(vm)),
    el('td', {}, `${vm.vcpus ?? '?'} vCPU, ${vm.memory_mib ?? '?'} MiB`),
    el('td', {}, actionBar(vm, FLEET_ACTIONS, (text, kind) => {
      const cell = rows.get(keyOf(vm))?.row.querySelector('.message');
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
  const shown = new Map(); // one row per VM: where it runs, if it is defined on two hosts
  for (const vm of listing.vms) {
    const other = shown.get(keyOf(vm));
    if (!other || (INACTIVE.includes(other.state) && !INACTIVE.includes(vm.state))) {
      shown.set(keyOf(vm), vm);
    }
  }
  const sections = hosts.map((host) => {
    const vms = [...shown.values()].filter((vm) => vm.host === host.name);
    const body = el('tbody');
    for (const vm of vms.sort((a, b) => a.name.localeCompare(b.name))) {
      const entry = { vm };
      rows.set(keyOf(vm), entry);
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
    const entry = rows.get(keyOf(message));
    if (!entry) { reload(); return; }
    if (message.host !== entry.vm.host) {
      // the VM on another host: it moved there, unless what is left behind (a copy
      // kept at the source, or its removal) speaks while it runs where it went
      if (!movedTo(entry.vm, message)) return;
      const body = fleet.querySelector(`section.host[data-host="${CSS.escape(message.host)}"] tbody`);
      if (!body) { reload(); return; }
      body.append(entry.row);
    } else if (message.state === 'undefined') { reload(); return; }
    entry.vm = { ...entry.vm, ...message };
    renderRow(entry);
  },
  event: (message) => {
    if (message.kind === 'host') reload();
  },
  lagged: reload,
  lost: () => banner('Event stream lost; reconnecting…', 'error'),
});
load().catch(showError);
