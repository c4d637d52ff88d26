// The serial console page: xterm.js over /ws/serial/..., with a fresh one-time
// ticket for each connection. Keys go out as text frames, the console's output comes
// back as binary frames; the server's close reason is printed in the terminal.
import { Terminal } from '/vendor/xterm/xterm/lib/xterm.mjs';
import { FitAddon } from '/vendor/xterm/addon-fit/lib/addon-fit.mjs';
import { page, ticket, wsUrl } from './common.js';

const { host, name } = page;
const status = document.getElementById('status');
const reconnect = document.getElementById('reconnect');
const takeover = document.getElementById('takeover');
const BUSY = 4409; // the console is held by another client (HTTP 409 + 4000)

const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000,
  fontFamily: 'ui-monospace, monospace', fontSize: 14 });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById('terminal'));
fit.fit();
window.addEventListener('resize', () => fit.fit());
let socket = null;
term.onData((data) => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
});

function say(text, kind = '') {
  status.textContent = text;
  status.className = kind;
}

async function connect(force = false) {
  reconnect.hidden = true;
  takeover.hidden = true;
  say('Connecting…');
  let issued;
  try {
    issued = await ticket(host, name, 'serial');
  } catch (err) {
    say(`Cannot open the console: ${err.message}`, 'error');
    reconnect.hidden = false;
    return;
  }
  socket = new WebSocket(wsUrl(issued.url + (force ? '&force=1' : '')));
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => {
    say(`Connected to the serial console of ${name} (press Enter for a prompt)`, 'ok');
    term.focus();
  };
  socket.onmessage = (e) => term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
  socket.onclose = (e) => {
    const why = e.reason || 'the connection ended';
    term.write(`\r\n\x1b[33m[console closed: ${why}]\x1b[0m\r\n`);
    say(`Disconnected: ${why}`, e.code === 1000 ? '' : 'error');
    reconnect.hidden = false;
    takeover.hidden = e.code !== BUSY;
    socket = null;
  };
}

reconnect.addEventListener('click', () => connect(false));
takeover.addEventListener('click', () => connect(true));
connect();
