// The migrate dialog of a VM's page: choose a destination and a kind of move, see the
// pre-flight report (POST .../migrate/check), and only when every check passed start
// the move (POST .../migrate) and follow its phases. The checks, not this page, decide
// what may move.
import { api, el, readOnly, track, vmApi } from './common.js';

// `name`: how the API is asked for the VM at `host` (its UUID, or its name); `label`:
// how the page calls it.
export async function setupMigrate(host, name, section, label = name) {
  const hosts = (await api('GET', '/api/hosts')).filter((h) => h.name !== host);
  if (!hosts.length) {
    section.replaceChildren(el('p', { class: 'muted' },
      'No other host to move to: add one with `virtlife host add NAME URI`.'));
    return;
  }
  const dest = el('select', { id: 'migrate-dest' },
    hosts.map((h) => el('option', { value: h.name }, h.reachable ? h.name : `${h.name} (unreachable)`)));
  const kind = el('select', { id: 'migrate-kind' },
    ['live', 'suspended', 'offline'].map((k) => el('option', { value: k }, k)));
  const check = el('button', { id: 'migrate-check' }, 'Check');
  const go = el('button', { id: 'migrate-start', disabled: true }, 'Migrate');
  const report = el('div', { id: 'migrate-report' });
  const status = el('p', { id: 'migrate-status', class: 'message' });
  const bar = el('progress', { id: 'migrate-progress', max: 1, hidden: true });
  const body = () => ({ dest: dest.value, [kind.value]: true });
  const invalidate = () => { go.disabled = true; report.replaceChildren(); };
  dest.addEventListener('change', invalidate);
  kind.addEventListener('change', invalidate);

  check.addEventListener('click', async () => {
    invalidate();
    status.textContent = 'Checking…';
    status.className = 'message busy';
    try {
      const result = await api('POST', vmApi(host, name, '/migrate/check'), body());
      report.replaceChildren(el('table', {}, el('tbody', {}, result.checks.map((c) => el('tr',
        { class: `check-${c.status}` }, el('td', { class: `check-status ${c.status}` }, c.status),
        el('td', {}, c.name), el('td', {}, c.reason, c.fix && c.status !== 'pass'
          ? el('div', { class: 'muted' }, `fix: ${c.fix}`) : null))))));
      status.textContent = result.ok ? `Every check passed: ${label} can move to ${dest.value}.`
        : 'A check failed: fix it, then check again.';
      status.className = `message ${result.ok ? 'ok' : 'error'}`;
      go.disabled = readOnly || !result.ok;
    } catch (err) {
      status.textContent = `Check refused: ${err.message}`;
      status.className = 'message error';
    }
  });

  go.addEventListener('click', async () => {
    go.disabled = true;
    check.disabled = true;
    let accepted;
    try {
      accepted = await api('POST', vmApi(host, name, '/migrate'), body());
    } catch (err) {
      status.textContent = `Migration refused: ${err.message}`;
      status.className = 'message error';
      check.disabled = false;
      return;
    }
    bar.hidden = false;
    bar.removeAttribute('value');
    await track(accepted.op_id, 'migrate', (text, cls, message) => {
      status.textContent = text;
      status.className = `message ${cls}`;
      if (message && typeof message.fraction === 'number') bar.value = message.fraction;
      if (cls !== 'busy') bar.hidden = true;
    });
    check.disabled = false;
  });

  section.replaceChildren(el('p', { class: 'actions' }, 'To ', dest, ' as a ', kind, ' move ',
    check, go), report, status, bar);
}
