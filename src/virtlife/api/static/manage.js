// Forms for what the CLI's create, host add/remove, attach-iso and graphics do: the
// fleet page's New VM and Add host forms and per-host Remove button, and the VM page's
// CD-ROM and VNC graphics sections. Each form posts to the REST API and shows its
// answer (the API's own message on a refusal); nothing here decides what is allowed.
import { api, el, isAdmin, readOnly, track, vmApi } from './common.js';

const enc = encodeURIComponent;

function field(label, input) {
  return el('label', { class: 'field' }, label, ' ', input);
}

function say(line, text, kind) {
  line.textContent = text;
  line.className = `message ${kind}`;
}

// Run `call` (an API request), then follow the operation a 202 names; `line` tells.
async function submit(line, label, call) {
  say(line, `${label}…`, 'busy');
  try {
    const answer = await call();
    if (answer && answer.op_id && answer.status === 'running') {
      return (await track(answer.op_id, label, (t, k) => say(line, t, k)))?.status === 'ok';
    }
    say(line, `${label}: done${answer && answer.note ? ` (${answer.note})` : ''}`, 'ok');
    return true;
  } catch (err) {
    say(line, `${label} refused: ${err.message}`, 'error');
    return false;
  }
}

const lines = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

// The fleet page's New VM form; `hostSelect` is refilled by the page on each load.
export function newVmForm(onDone) {
  const hostSelect = el('select', { name: 'host', required: true });
  const input = (name, attrs = {}) => el('input', { name, ...attrs });
  const inputs = {
    name: input('name', { required: true, maxlength: 64, placeholder: 'web1' }),
    memory_mib: input('memory_mib', { type: 'number', min: 1, value: 512 }),
    vcpus: input('vcpus', { type: 'number', min: 1, max: 4096, value: 1 }),
    disks: input('disks', { placeholder: '/var/lib/libvirt/images/web1.qcow2', size: 40 }),
    networks: input('networks', { placeholder: 'default' }),
    user_nic: input('user_nic', { type: 'checkbox' }),
    kernel: input('kernel', { placeholder: '/boot/vmlinuz', size: 30 }),
    initrd: input('initrd', { size: 30 }),
    cmdline: input('cmdline', { placeholder: 'console=ttyS0', size: 30 }),
    start: input('start', { type: 'checkbox', checked: true }),
  };
  const line = el('p', { class: 'message', id: 'new-vm-message' });
  const form = el('form', { id: 'new-vm-form', class: 'inline-form' },
    field('Name', inputs.name), field('Host', hostSelect),
    field('Memory (MiB)', inputs.memory_mib), field('vCPUs', inputs.vcpus),
    field('Disk images', inputs.disks), field('Networks', inputs.networks),
    field('User-mode NIC', inputs.user_nic),
    el('details', {}, el('summary', {}, 'Direct kernel boot'),
      field('Kernel', inputs.kernel), field('Initrd', inputs.initrd),
      field('Command line', inputs.cmdline)),
    field('Start it', inputs.start),
    el('button', { type: 'submit', disabled: readOnly }, 'Create'), line);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {
      name: inputs.name.value.trim(), memory_mib: Number(inputs.memory_mib.value),
      vcpus: Number(inputs.vcpus.value), disks: lines(inputs.disks.value),
      networks: lines(inputs.networks.value), user_nic: inputs.user_nic.checked,
      start: inputs.start.checked, wait_s: 0,
    };
    for (const key of ['kernel', 'initrd', 'cmdline']) {
      if (inputs[key].value.trim()) body[key] = inputs[key].value.trim();
    }
    const ok = await submit(line, `create ${body.name}`,
      () => api('POST', `/api/hosts/${enc(hostSelect.value)}/vms`, body));
    if (ok) onDone();
  });
  return { form, hostSelect };
}

export function addHostForm(onDone) {
  const name = el('input', { name: 'name', required: true, maxlength: 63, placeholder: 'hv2' });
  const uri = el('input', { name: 'uri', required: true, size: 36,
    placeholder: 'qemu+ssh://root@10.0.0.2/system' });
  const line = el('p', { class: 'message', id: 'add-host-message' });
  const form = el('form', { id: 'add-host-form', class: 'inline-form' },
    field('Name', name), field('URI', uri),
    el('button', { type: 'submit', disabled: !isAdmin }, 'Add host'), line);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    say(line, `adding ${name.value}…`, 'busy');
    try {
      const added = await api('POST', '/api/hosts', { name: name.value.trim(), uri: uri.value.trim() });
      say(line, added.reachable ? `added ${added.name}`
        : `added ${added.name}; not reachable now: ${added.problem}`, added.reachable ? 'ok' : 'error');
      onDone();
    } catch (err) {
      say(line, `add host refused: ${err.message}`, 'error');
    }
  });
  return form;
}

export function removeHostButton(host, report, onDone) {
  return el('button', {
    class: 'remove-host', 'data-host': host, disabled: !isAdmin,
    onclick: async () => {
      if (!confirm(`Remove host ${host} from the inventory? Its VMs are not touched.`)) return;
      try {
        await api('DELETE', `/api/hosts/${enc(host)}`);
        onDone();
      } catch (err) {
        report(`remove ${host} refused: ${err.message}`);
      }
    },
  }, 'remove');
}

// The VM page's CD-ROMs: the list (Detach on the ones virtlife attached) and Attach.
export async function setupMedia(host, name, section) {
  const line = el('p', { class: 'message', id: 'media-message' });
  const list = el('div', { id: 'media-list' });
  const path = el('input', { name: 'path', size: 44, required: true,
    placeholder: '/var/lib/libvirt/images/debian-12.iso' });
  const bus = el('select', { name: 'bus' }, ['scsi', 'sata', 'ide'].map(
    (b) => el('option', { value: b }, b)));
  const form = el('form', { id: 'media-form', class: 'inline-form' },
    field('ISO', path), field('Bus', bus),
    el('button', { type: 'submit', disabled: readOnly }, 'Attach'));

  async function refresh() {
    const drives = await api('GET', vmApi(host, name, '/media'));
    list.replaceChildren(drives.length ? el('table', {}, el('tbody', {}, drives.map((d) => el('tr',
      { 'data-target': d.target }, el('td', {}, d.target), el('td', {}, d.bus),
      el('td', {}, d.source || '(empty)'),
      el('td', { class: 'muted' }, [d.live && 'running VM', d.defined && 'definition']
        .filter(Boolean).join(' + ')),
      el('td', {}, d.by_virtlife && d.source ? el('button', {
        disabled: readOnly,
        onclick: async () => {
          if (await submit(line, `detach ${d.source}`, () => api('DELETE',
            vmApi(host, name, `/media?path=${enc(d.source)}&wait_s=0`)))) refresh();
        },
      }, 'detach') : ''))))) : el('p', { class: 'muted' }, 'No CD-ROM.'));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const ok = await submit(line, `attach ${path.value}`, () => api('POST',
      vmApi(host, name, '/media'), { path: path.value.trim(), bus: bus.value, wait_s: 0 }));
    if (ok) refresh();
  });
  section.replaceChildren(list, form, line);
  await refresh();
  return refresh;
}

// The VM page's VNC graphics: the definition's settings, where the live server is, and
// a form for the listen address and the password (never shown, only set or removed).
export async function setupGraphics(host, name, section) {
  const info = el('div', { id: 'graphics-info' });
  const listen = el('input', { name: 'listen', placeholder: '127.0.0.1', size: 16 });
  const password = el('input', { name: 'password', type: 'password', maxlength: 8,
    autocomplete: 'new-password', placeholder: 'unchanged' });
  const line = el('p', { class: 'message', id: 'graphics-message' });
  const change = (body) => submit(line, 'graphics',
    () => api('PUT', vmApi(host, name, '/graphics'), { ...body, wait_s: 0 }))
    .then((ok) => { password.value = ''; if (ok) refresh(); });
  const form = el('form', { id: 'graphics-form', class: 'inline-form' },
    field('Listen', listen), field('Password', password),
    el('button', { type: 'submit', disabled: readOnly }, 'Apply'),
    el('button', { type: 'button', id: 'graphics-clear', disabled: readOnly,
      onclick: () => change({ remove_password: true }) }, 'Remove password'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = {};
    if (listen.value.trim()) body.listen = listen.value.trim();
    if (password.value) body.password = password.value;
    change(body);
  });

  async function refresh() {
    const g = await api('GET', vmApi(host, name, '/graphics'));
    const live = await api('GET', vmApi(host, name, '/vnc')).catch(() => null);
    info.replaceChildren(el('p', {}, g.vnc
      ? `VNC on ${g.listen || '127.0.0.1'}, port ${g.port ?? 'chosen at start'}, `
        + (g.password ? 'a password set' : 'no password')
      : 'No VNC graphics in the definition.',
    live ? el('span', { class: 'muted' }, ` · running server: ${live.address || live.listen}:${live.port} `
      + `(display :${live.display})`) : ''));
    if (!listen.value) listen.value = g.listen || '';
  }

  section.replaceChildren(info, form, line);
  await refresh();
  return refresh;
}
