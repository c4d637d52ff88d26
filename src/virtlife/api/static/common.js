// Shared by the web UI's pages: calls to the REST API that surface its own error
// messages, the event stream, and the lifecycle buttons. The buttons follow the
// `allowed` lists the API sends; nothing here decides what a VM may do.

export const page = document.body.dataset;
// The token's role (reader < operator < admin): buttons a role may not use are disabled;
// the API refuses them anyway (403).
export const role = page.role || 'reader';
export const readOnly = role === 'reader';
export const isAdmin = role === 'admin';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const vmApi = (host, name, tail = '') =>
  `/api/vms/${encodeURIComponent(host)}/${encodeURIComponent(name)}${tail}`;
export const vmPage = (host, name, tail = '') =>
  `/vm/${encodeURIComponent(host)}/${encodeURIComponent(name)}${tail}`;
// A VM's page by its UUID (the page follows the VM to another host), else by name.
export const vmPageOf = (vm) => (vm.uuid ? `/vm/${encodeURIComponent(vm.uuid)}`
  : vmPage(vm.host, vm.name));

// Whether a VM seen at another host (`seen`, a state message or a listing row of the
// same UUID) is where `known` went, rather than what it left behind: its removal, or an
// inactive copy while it runs at its new host. One rule for the fleet and VM pages.
export const INACTIVE = ['shutoff', 'saved', 'undefined', 'crashed'];
export function movedTo(known, seen) {
  if (seen.state === 'undefined') return false;
  return !(INACTIVE.includes(seen.state) && !INACTIVE.includes(known.state));
}

export async function api(method, path, payload) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (payload !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network', `cannot reach virtlife serve: ${err.message}`);
  }
  if (response.status === 401) {
    location.assign('/login?next=' + encodeURIComponent(location.pathname));
  }
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(response.status, error ? error.code : 'http_error',
      error ? error.message : `${response.status} ${response.statusText}`);
  }
  return data;
}

// el('td', {class: 'x', onclick: f}, 'text', child...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

export function banner(text, kind = 'info') {
  const node = document.getElementById('banner');
  node.textContent = text;
  node.className = `banner ${kind}`;
}

// Progress reports of the operations this page started, by operation id.
const watching = new Map();

// Subscribe to /api/events; `handlers` by message type. EventSource reconnects itself.
export function follow(handlers) {
  const source = new EventSource('/api/events');
  for (const type of ['hello', 'state', 'event', 'progress', 'operation', 'lagged']) {
    source.addEventListener(type, (e) => {
      const message = JSON.parse(e.data);
      if (type === 'progress' && watching.has(message.op_id)) {
        watching.get(message.op_id)(message.message || message.stage, 'busy', message);
      }
      if (handlers[type]) handlers[type](message);
    });
  }
  source.onerror = () => handlers.lost && handlers.lost();
  return source;
}

// The buttons each page shows, in order; `confirm` asks before a destructive one.
export const ACTIONS = {
  start: {}, shutdown: {}, reboot: {}, suspend: {}, resume: {},
  managedsave: { label: 'save (managed)' },
  reset: { confirm: 'Reset {vm}? Like pressing its reset button: unsaved data is lost.' },
  destroy: { confirm: 'Destroy {vm}? It is powered off at once, like pulling the plug.' },
  'managedsave-remove': { label: 'drop managed save',
    confirm: 'Drop the managed save image of {vm}? Its saved memory is lost.' },
  pmsuspend: {}, pmwakeup: {},
  undefine: { confirm: 'Undefine {vm}? Its definition is removed (its disks are kept).' },
};

export function actionBar(vm, names, report) {
  const bar = el('span', { class: 'actions' });
  for (const name of names) {
    const spec = ACTIONS[name] || {};
    const allowed = (vm.allowed || []).includes(name);
    bar.append(el('button', {
      'data-action': name,
      disabled: readOnly || !allowed,
      title: readOnly ? 'a reader token only looks' : allowed ? '' : `not allowed while ${vm.label || vm.state}`,
      onclick: () => {
        if (spec.confirm && !confirm(spec.confirm.replace('{vm}', vm.name))) return;
        runAction(vm.host, vm.ref || vm.name, name, report); // ref: HOST/UUID's UUID
      },
    }, spec.label || name));
  }
  return bar;
}

// POST the action, then report its progress and its outcome through `report(text, kind)`.
export async function runAction(host, name, action, report) {
  let accepted;
  try {
    accepted = await api('POST', vmApi(host, name, `/actions/${action}`));
  } catch (err) {
    report(`${action} refused: ${err.message}`, 'error');
    return null;
  }
  return track(accepted.op_id, action, report);
}

// Follow operation `opId` to its end: `report(text, kind, progressMessage)` on each step
// (from the event stream) and at the end (from GET /api/operations/{id}?wait).
export async function track(opId, label, report) {
  report(`${label}: started`, 'busy');
  watching.set(opId, report);
  try {
    for (;;) {
      const job = await api('GET', `/api/operations/${opId}?wait=30`);
      if (job.status === 'running') continue;
      if (job.status === 'ok') {
        const note = job.result && job.result.note ? ` (${job.result.note})` : '';
        report(`${label}: done${note}`, 'ok');
      } else {
        report(`${label} ${job.status}: ${job.error || 'no reason given'}`, 'error');
      }
      return job;
    }
  } catch (err) {
    report(`${label}: ${err.message}`, 'error');
    return null;
  } finally {
    watching.delete(opId);
  }
}

export function stateText(vm) {
  return vm.reason && vm.reason !== 'unknown' ? `${vm.label} (${vm.reason})` : vm.label;
}

export async function ticket(host, name, kind) {
  return api('POST', vmApi(host, name, '/console-tickets'), { kind });
}

export function wsUrl(path) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}
