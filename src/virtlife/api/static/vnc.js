// The VNC console page: a fresh one-time ticket, then noVNC over our WebSocket to
// /ws/vnc/... The socket is made here (not by noVNC) so that the server's close
// reason (a refused ticket, a VM that is not running) can be shown.
import RFB from '/vendor/novnc/core/rfb.js';
import { page, ticket, wsUrl } from './common.js';

const { host, name } = page;
const screen = document.getElementById('screen');
const status = document.getElementById('status');
const reconnect = document.getElementById('reconnect');
const cad = document.getElementById('cad');
let rfb = null;

function say(text, kind = '') {
  status.textContent = text;
  status.className = kind;
}

async function connect() {
  reconnect.hidden = true;
  say('Connecting…');
  let issued;
  try {
    issued = await ticket(host, name, 'vnc');
  } catch (err) {
    say(`Cannot open the console: ${err.message}`, 'error');
    reconnect.hidden = false;
    return;
  }
  const socket = new WebSocket(wsUrl(issued.url), ['binary']);
  let closed = null;
  socket.addEventListener('close', (e) => { closed = e; });
  rfb = new RFB(screen, socket, { shared: true });
  rfb.scaleViewport = true;
  rfb.addEventListener('connect', () => {
    say(`Connected to ${name}`, 'ok');
    cad.disabled = false;
    rfb.focus();
  });
  rfb.addEventListener('disconnect', () => {
    cad.disabled = true;
    const why = closed && closed.reason ? closed.reason : 'the connection ended';
    say(`Disconnected: ${why}`, closed && closed.code === 1000 ? '' : 'error');
    reconnect.hidden = false;
    rfb = null;
  });
  rfb.addEventListener('credentialsrequired', () => {
    const password = prompt(`VNC password of ${name}`);
    if (password === null) rfb.disconnect();
    else rfb.sendCredentials({ password });
  });
  rfb.addEventListener('securityfailure', (e) => say(`Refused by the VNC server: ${e.detail.reason}`, 'error'));
  rfb.addEventListener('desktopname', (e) => { document.title = `${e.detail.name} · virtlife`; });
}

reconnect.addEventListener('click', connect);
cad.addEventListener('click', () => rfb && rfb.sendCtrlAltDel());
connect();
