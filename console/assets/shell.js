// A terminal in a container: xterm.js over the exec WebSocket the CLI's `dora shell` uses
// (bytes both ways; `{"resize": {cols, rows}}` when the window changes; `{"exitCode": N}` at
// the end).

import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';
import { h } from './dom.js';

// The terminal's own stylesheet, added with the first terminal.
if (!document.querySelector('link[href="vendor/xterm.css"]')) {
  document.head.append(h('link', { rel: 'stylesheet', href: 'vendor/xterm.css' }));
}

/** Opens a shell in the container at `path` (its API path) inside `parent`; returns a closer. */
export function openShell(parent, path) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Connecting…');
  const screen = h('div', { class: 'terminal', 'aria-label': 'Shell' });
  parent.append(status, screen);
  const terminal = new Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open(screen);
  fit.fit();
  const url = new URL(`${path}/exec`, location.href);
  url.protocol = 'wss:';
  url.searchParams.set('tty', 'true');
  url.searchParams.set('command', JSON.stringify(['sh']));
  const socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  const resize = () => {
    fit.fit();
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ resize: { cols: terminal.cols, rows: terminal.rows } }));
    }
  };
  socket.onopen = () => {
    status.textContent = 'Connected: type commands below.';
    resize();
    terminal.focus();
  };
  socket.onmessage = (message) => {
    if (typeof message.data === 'string') {
      const control = JSON.parse(message.data);
      if ('exitCode' in control) status.textContent = `The shell ended (exit code ${control.exitCode}).`;
      return;
    }
    terminal.write(new Uint8Array(message.data));
  };
  socket.onclose = () => {
    if (status.textContent.startsWith('Conn')) status.textContent = 'The session closed; reload to open another.';
  };
  const input = terminal.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  const observer = new ResizeObserver(resize);
  observer.observe(screen);
  return () => {
    observer.disconnect();
    input.dispose();
    socket.close();
    terminal.dispose();
  };
}
