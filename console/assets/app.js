// The console's entry: the session (log in with a token or a `dora console` link, log out)
// and the routes of the page (`#/workloads`, `#/workloads/NAME`, `#/apply`, ...).

import { call, whenLoggedOut } from './api.js';
import { h, tickAges } from './dom.js';
import * as views from './views.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let session = null;
let stop = () => {};

const routes = [
  [/^#\/workloads\/([^/]+)$/, views.workload],
  [/^#\/containers\/([^/]+)\/logs$/, views.logs],
  [/^#\/containers\/([^/]+)\/shell$/, views.shell],
  [/^#\/apply$/, views.apply],
  [/^#\/nodes$/, views.nodes],
  [/^#\/events$/, views.events],
  [/^#\/credits$/, views.credits],
  [/^#\/kinds$/, views.kinds],
  [/^#\/kinds\/([^/]+)$/, views.kind],
  [/^(#\/workloads)?$/, views.workloads],
];

function route() {
  stop();
  stop = () => {};
  main.replaceChildren();
  if (!session) return;
  const hash = location.hash === '#/' ? '' : location.hash;
  for (const [pattern, view] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    const args = match.slice(1).filter((a) => a !== undefined && !a.startsWith('#')).map(decodeURIComponent);
    stop = view(main, session, ...args) ?? (() => {});
    for (const link of nav.querySelectorAll('a')) {
      if (hash.startsWith(link.getAttribute('href'))) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    main.focus({ preventScroll: true });
    return;
  }
  main.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/workloads' }, 'Workloads')));
}

function loggedIn(identity) {
  session = identity;
  nav.hidden = false;
  const user = h('span', { id: 'user' }, `${identity.user} · ${identity.zone}/${identity.workspace}`);
  // Another zone or workspace the user may read: the views show the one chosen.
  const places = identity.places ?? [];
  const here = (p) => p.zone === session.zone && p.workspace === session.workspace;
  const place = places.length > 1 || (places.length === 1 && !here(places[0])) ? h('select', {
    id: 'place', 'aria-label': 'Zone and workspace shown',
    onchange: (event) => {
      Object.assign(session, places[event.target.selectedIndex]);
      user.textContent = `${session.user} · ${session.zone}/${session.workspace}`;
      route();
    },
  }, places.map((p, i) => h('option', { value: i, selected: here(p) }, `${p.zone}/${p.workspace}`))) : '';
  who.replaceChildren(user, place, h('button', { type: 'button', id: 'logout', onclick: logout }, 'Log out'));
  route();
}

async function logout() {
  try { await call('POST', '/v1/console/logout'); } catch { /* the session may have ended already */ }
  loggedOut('You are logged out.');
}

function loggedOut(message) {
  stop();
  stop = () => {};
  session = null;
  nav.hidden = true;
  who.replaceChildren();
  const token = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'login-message' });
  const text = h('p', { id: 'login-message', role: 'alert' }, message ?? '');
  const form = h('form', {
    class: 'login',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        loggedIn(await call('POST', '/v1/console/login', JSON.stringify({ token: token.value.trim() })));
      } catch (error) {
        text.textContent = error.status === 401 ? `Refused: ${error.message}` : error.message;
        token.select();
      }
    },
  },
  h('h1', {}, 'Log in to Dora'),
  h('label', { for: 'token' }, 'Token (from `dora token create`, or run `dora console` to open a logged-in page)'),
  token, h('button', { type: 'submit', id: 'login' }, 'Log in'), text);
  main.replaceChildren(form);
  token.focus();
}

whenLoggedOut((error) => { if (session) loggedOut(error?.message ?? 'The session has ended; log in again.'); });

/** Logs in with the code of a `dora console` link (`#login=CODE`), good once. */
async function redeem(code) {
  // Take the code out of the address and the history.
  history.replaceState(null, '', `${location.pathname}#/workloads`);
  try {
    loggedIn(await call('POST', '/v1/console/login', JSON.stringify({ code })));
  } catch (error) {
    loggedOut(error.message);
  }
}

function loginCode() {
  return location.hash.match(/^#login=([0-9a-f]+)$/)?.[1];
}

window.addEventListener('hashchange', () => {
  const code = loginCode();
  if (code) redeem(code);
  else route();
});

async function start() {
  const code = loginCode();
  if (code) {
    await redeem(code);
    return;
  }
  try {
    const identity = await call('GET', '/v1/console/session');
    if (identity.user) loggedIn(identity);
    else loggedOut();
  } catch (error) {
    loggedOut(error.message);
  }
}

// Ages shown keep counting between changes.
setInterval(tickAges, 5000);

start();
