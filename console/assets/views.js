// The console's views. Each takes the element to fill, the session (user, zone, workspace)
// and the route's arguments, and returns a function that stops what it started (watches,
// streams, the shell).

import { call, streamLines, watchCollection, scoped, zoned } from './api.js';
import { h, age, ageOf, until, bytes, virtualTable } from './dom.js';

const enc = encodeURIComponent;

// Replicas in their order (`w.2` before `w.10`); otherwise names compare as ASCII (DNS labels).
function compareNames(a, b) {
  const i = a.lastIndexOf('.');
  const j = b.lastIndexOf('.');
  if (i > 0 && i === j && a.startsWith(b.slice(0, j + 1))) {
    const x = Number(a.slice(i + 1));
    const y = Number(b.slice(j + 1));
    if (Number.isInteger(x) && Number.isInteger(y)) return x - y;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

const sorted = new WeakMap();

/** The objects of a watched collection by name; sorted again only when names came or went. */
function byName(map) {
  let names = sorted.get(map);
  if (!names || names.membership !== map.membership) {
    names = { membership: map.membership, list: [...map.keys()].sort(compareNames) };
    sorted.set(map, names);
  }
  return names.list.map((name) => map.get(name));
}

function phase(object) {
  const word = object.status?.phase ?? '';
  return h('span', { class: `phase ${word.toLowerCase()}` }, word);
}

/** A line that tells the outcome of an action, read out by screen readers. */
function notice() {
  const element = h('p', { class: 'notice', role: 'status' });
  return {
    element,
    ok(text) { element.className = 'notice ok'; element.textContent = text; },
    fail(error) { element.className = 'notice error'; element.textContent = error.message; },
  };
}

/**
 * Pause, Resume and Delete for workload `name`; `show(w)` offers Pause while it is not paused
 * by someone and Resume while it is.
 */
function workloadActions(session, name, note) {
  const path = `${scoped(session, 'workloads')}/${enc(name)}`;
  const act = (label, run) => h('button', {
    type: 'button',
    'data-action': label.toLowerCase(),
    'aria-label': `${label} ${name}`,
    onclick: async () => {
      try { await run(); note.ok(`${label}: ${name}`); } catch (error) { note.fail(error); }
    },
  }, label);
  const pause = act('Pause', () => call('POST', `${path}/pause`));
  const resume = act('Resume', () => call('POST', `${path}/resume`));
  const element = h('span', { class: 'actions' }, pause, resume,
    act('Delete', () => confirm(`Delete workload ${name} and its containers?`) && call('DELETE', path)));
  const show = (w) => {
    const paused = Boolean(w?.status?.computed?.pausedBy);
    pause.disabled = paused;
    resume.disabled = !paused;
  };
  return { element, show };
}

/** The workloads of the session's workspace, live, with pause, resume and delete. */
export function workloads(main, session) {
  const note = notice();
  const count = h('span', { class: 'muted' });
  const table = virtualTable([
    { name: 'Name', cell: (w) => h('a', { href: `#/workloads/${enc(w.metadata.name)}` }, w.metadata.name) },
    { name: 'Status', cell: phase, width: '8em' },
    { name: 'Ready', cell: (w) => `${w.status?.computed?.ready ?? 0}/${w.spec?.replica?.count ?? 0}`, width: '5em' },
    { name: 'Why', cell: (w) => w.status?.message ?? '', width: 'minmax(8em, 2fr)' },
    { name: 'Age', cell: (w) => ageOf(w.metadata.created), width: '4em' },
    { name: '', width: '15em', cell: (w) => {
      const actions = workloadActions(session, w.metadata.name, note);
      actions.show(w);
      return actions.element;
    } },
  ], { label: 'Workloads', empty: 'No workloads in this workspace yet: apply one.' });
  main.append(
    h('h1', {}, 'Workloads ', count),
    h('p', { class: 'muted' }, `Workspace ${session.workspace} of zone ${session.zone}. `,
      h('a', { href: '#/apply' }, 'Apply a manifest')),
    note.element,
    table.element,
  );
  return watchCollection(scoped(session, 'workloads'), (map) => {
    count.textContent = `(${map.size})`;
    table.set(byName(map));
  }, note.fail);
}

/** One workload: its spec, its containers live, and its events live. */
export function workload(main, session, name) {
  const note = notice();
  const summary = h('dl', { class: 'summary' });
  const containers = virtualTable([
    { name: 'Container', cell: (c) => c.metadata.name },
    { name: 'Status', cell: phase, width: '8em' },
    { name: 'Node', cell: (c) => c.status?.computed?.node ?? '', width: '8em' },
    { name: 'Restarts', cell: (c) => c.status?.computed?.restarts ?? 0, width: '5em' },
    { name: 'GPUs', cell: (c) => (c.status?.computed?.gpus ?? []).join(','), width: '5em' },
    { name: '', width: '10em', cell: (c) => h('span', { class: 'actions' },
      h('a', { href: `#/containers/${enc(c.metadata.name)}/logs` }, 'Logs'),
      h('a', { href: `#/containers/${enc(c.metadata.name)}/shell` }, 'Shell')) },
  ], { label: 'Containers', empty: 'No containers now (paused, finished, or not placed yet).' });
  const events = h('ol', { class: 'events', 'aria-live': 'polite' });
  const history = specHistory(`${scoped(session, 'workloads')}/${enc(name)}`, note);
  const actions = workloadActions(session, name, note);
  main.append(
    h('h1', {}, `Workload ${name}`),
    actions.element,
    note.element,
    summary,
    h('h2', {}, 'Containers'),
    containers.element,
    h('h2', {}, 'Spec history'),
    history.element,
    h('h2', {}, 'Events'),
    events,
  );
  const stops = [
    watchCollection(`${scoped(session, 'workloads')}/${enc(name)}`, (map) => {
      const w = map.get(name);
      if (!w) { summary.replaceChildren(h('dt', {}, 'Status'), h('dd', {}, 'not found (deleted?)')); return; }
      const image = w.spec?.image?.image ?? (w.spec?.config?.cmd ?? []).join(' ');
      const rows = [
        ['Status', phase(w)], ['Ready', `${w.status?.computed?.ready ?? 0}/${w.spec?.replica?.count ?? 0}`],
        ['Why', w.status?.message ?? '—'], ['Driver', w.spec?.driver ?? ''], ['Image or command', image],
        ['Generation', w.metadata.generation], ['Age', ageOf(w.metadata.created)],
      ];
      summary.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
      actions.show(w);
      history.update(w);
    }, note.fail),
    watchCollection(scoped(session, 'containers'), (map) => {
      containers.set(byName(map).filter((c) => c.spec?.workload === name));
    }, note.fail),
    followEvents(events, `kind=Workload&workspace=${enc(session.workspace)}&name=${enc(name)}&zone=${enc(session.zone)}`, note),
  ];
  return () => stops.forEach((stop) => stop());
}

/** The lines of `before` and `after` as a diff: `[' ' | '-' | '+', line]`, by longest common subsequence. */
function diffLines(before, after) {
  const a = before.split('\n');
  const b = after.split('\n');
  const common = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { lines.push([' ', a[i]]); i++; j++; }
    else if (i < a.length && (j === b.length || common[i + 1][j] >= common[i][j + 1])) { lines.push(['-', a[i]]); i++; }
    else { lines.push(['+', b[j]]); j++; }
  }
  return lines;
}

/**
 * The spec versions of the workload at `path`: pick one to see how the current spec differs
 * from it, and roll back to it (its spec applied again, as a new generation). Read again when
 * the object's generation changes.
 */
function specHistory(path, note) {
  const choice = h('select', { id: 'version', 'aria-label': 'Version to compare with the current one' });
  const diff = h('pre', { class: 'diff', id: 'diff', tabindex: '0', 'aria-label': 'Changes from the chosen version to the current one' });
  const rollback = h('button', { type: 'button', id: 'rollback', disabled: true }, 'Roll back to it');
  const element = h('div', { class: 'history' }, h('p', {}, choice, ' ', rollback), diff);
  let versions = [];
  let seen = null;
  const text = (spec) => JSON.stringify(spec, null, 2);
  const show = () => {
    const chosen = versions.find((v) => String(v.generation) === choice.value);
    const current = versions.find((v) => v.current);
    rollback.disabled = !chosen || chosen.current;
    if (!chosen || !current) { diff.replaceChildren(); return; }
    diff.replaceChildren(...diffLines(text(chosen.spec), text(current.spec)).map(([mark, line]) =>
      h('span', { class: mark === '+' ? 'added' : mark === '-' ? 'removed' : '' }, `${mark} ${line}\n`)));
  };
  choice.addEventListener('change', show);
  rollback.addEventListener('click', async () => {
    const chosen = versions.find((v) => String(v.generation) === choice.value);
    try {
      await call('POST', `${path}/rollback?generation=${chosen.generation}`);
      note.ok(`Rolled back to generation ${chosen.generation}'s spec.`);
    } catch (error) { note.fail(error); }
  });
  const load = async () => {
    try {
      versions = (await call('GET', `${path}/versions`)).items.sort((a, b) => b.generation - a.generation);
    } catch (error) { note.fail(error); return; }
    const chosen = choice.value;
    choice.replaceChildren(...versions.map((v) => h('option', { value: v.generation, selected: String(v.generation) === chosen },
      v.current ? `Generation ${v.generation} (current)` : `Generation ${v.generation}, replaced ${new Date(v.replaced).toLocaleString()}`)));
    show();
  };
  return {
    element,
    /** Takes the object as it is now; reads the versions again when its generation changed. */
    update(object) {
      if (object.metadata.generation !== seen) { seen = object.metadata.generation; load(); }
    },
  };
}

function eventItem(e) {
  const where = `${e.object?.kind ?? ''} ${e.object?.metadata?.workspace ? `${e.object.metadata.workspace}/` : ''}${e.object?.metadata?.name ?? ''}`;
  return h('li', { class: `event ${String(e.type).toLowerCase()}` },
    h('time', { datetime: e.time }, new Date(e.time).toLocaleTimeString()), ' ',
    h('strong', {}, e.reason), ' ', h('span', { class: 'muted' }, where), ' ', e.message,
    e.count > 1 ? h('span', { class: 'muted' }, ` ×${e.count}`) : '');
}

/** Follows the events of a query into a list, newest first, keeping the last 500. */
function followEvents(list, query, note) {
  const controller = new AbortController();
  streamLines(`/v1/events?watch=true&${query}`, controller.signal, (line) => {
    if (!line.trim()) return;
    const event = JSON.parse(line);
    if (event.type === 'BOOKMARK' || event.type === 'ERROR') return;
    list.prepend(eventItem(event));
    while (list.childElementCount > 500) list.lastElementChild.remove();
  }).catch((error) => { if (!controller.signal.aborted) note.fail(error); });
  return () => controller.abort();
}

/** The events of the zone, live. */
export function events(main, session) {
  const note = notice();
  const list = h('ol', { class: 'events', 'aria-live': 'polite' });
  main.append(h('h1', {}, `Events of zone ${session.zone}`), note.element, list);
  return followEvents(list, `zone=${enc(session.zone)}`, note);
}

/**
 * The lines of YAML `text` where each document begins and ends (`[first, end)`), as the
 * server splits them: on `---` (or `...`) lines, leaving out documents of only blanks and
 * comments, so that a result's index finds its document.
 */
function documentLines(lines) {
  const blank = (from, to) => lines.slice(from, to).every((l) => !l.trim() || l.trimStart().startsWith('#'));
  const documents = [];
  let first = 0;
  lines.forEach((line, i) => {
    if (line === '---' || line.startsWith('--- ') || line === '...') {
      if (!blank(first, i)) documents.push([first, i]);
      first = i + 1;
    }
  });
  if (!blank(first, lines.length)) documents.push([first, lines.length]);
  return documents;
}

/**
 * The line of `field` (`spec.image.image`, `spec.ports[0].port`) within lines `[first, end)`:
 * each key of its path in turn, from where the one before it was found (a flow mapping's key
 * may follow on the same line). The deepest key found, when the path does not go on.
 */
function fieldLine(lines, [first, end], field) {
  const keys = field.split('.').map((key) => key.replace(/\[\d+\]$/, '')).filter(Boolean);
  let line = null;
  let column = 0;
  let at = first;
  for (const key of keys) {
    const pattern = new RegExp(`(^|[\\s{,-])["']?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']?\\s*:`, 'g');
    let found = false;
    for (let i = at; i < end && !found; i++) {
      pattern.lastIndex = i === at ? column : 0;
      const match = pattern.exec(lines[i]);
      if (match) { line = i; column = match.index + match[0].length; at = i; found = true; }
    }
    if (!found) break;
  }
  return line;
}

/** A manifest editor: applies it and shows each document's result; a refused field is marked in the text. */
export function apply(main, session) {
  const editor = h('textarea', {
    id: 'manifest', rows: 18, spellcheck: 'false', wrap: 'off', 'aria-label': 'Manifest (YAML)',
    placeholder: 'apiVersion: v1\nkind: Workload\nmetadata: {name: hello}\nspec: ...',
  });
  // Marks over the editor's text: one per refused field, on its line.
  const marks = h('div', { class: 'marks', 'aria-hidden': 'true' });
  const field = h('div', { class: 'editor' }, editor, marks);
  const results = h('ol', { class: 'results', id: 'results', 'aria-live': 'polite' });
  const note = notice();
  const button = h('button', { type: 'submit', id: 'apply' }, 'Apply');
  let marked = [];
  const placeMarks = () => {
    const style = getComputedStyle(editor);
    const height = parseFloat(style.lineHeight);
    const top = parseFloat(style.paddingTop) + parseFloat(style.borderTopWidth) - editor.scrollTop;
    marks.replaceChildren(...marked.map((line) => {
      const mark = h('div', { class: 'mark', 'data-line': line });
      mark.style.top = `${top + line * height}px`;
      mark.style.height = `${height}px`;
      return mark;
    }));
  };
  const unmark = () => { marked = []; placeMarks(); };
  editor.addEventListener('scroll', placeMarks, { passive: true });
  editor.addEventListener('input', unmark);
  /** Selects line `line` of the editor and scrolls it into view. */
  const select = (line) => {
    const lines = editor.value.split('\n');
    const start = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
    editor.focus();
    editor.setSelectionRange(start, start + lines[line].length);
    const height = parseFloat(getComputedStyle(editor).lineHeight);
    if (line * height < editor.scrollTop || (line + 1) * height > editor.scrollTop + editor.clientHeight) {
      editor.scrollTop = Math.max(0, line * height - editor.clientHeight / 3);
    }
    placeMarks();
  };
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      results.replaceChildren();
      unmark();
      const query = `?zone=${enc(session.zone)}&workspace=${enc(session.workspace)}`;
      try {
        const answer = await call('POST', `/v1/apply${query}`, editor.value, 'application/yaml');
        note.ok('Applied.');
        show(answer.results);
      } catch (error) {
        const list = error.body?.results;
        if (!list) { note.fail(error); return; }
        const refused = list.filter((r) => r.error).length;
        note.fail(new Error(refused === list.length
          ? 'Nothing was applied: every document was refused.'
          : `${refused} of ${list.length} documents refused; the others were applied.`));
        show(list);
      } finally {
        button.disabled = false;
      }
    },
  }, h('label', { for: 'manifest' }, 'Manifest (YAML, several documents separated by ---)'), field, h('div', {}, button));
  // The message may begin with the document and field it is about, which are shown apart.
  const message = (r) => r.error.message.replace(/^document \d+: /, '')
    .replace(r.error.field ? `${r.error.field}: ` : /^$/, '');
  const here = (r) => (r.zone ?? session.zone) === session.zone && (r.workspace ?? session.workspace) === session.workspace;
  const show = (list) => {
    const lines = editor.value.split('\n');
    const documents = documentLines(lines);
    const lineOf = (r) => (r.error?.field && documents[r.index] ? fieldLine(lines, documents[r.index], r.error.field) : null);
    marked = list.map(lineOf).filter((line) => line !== null);
    results.replaceChildren(...list.map((r) => {
      if (!r.error) {
        return h('li', { class: 'ok' }, `${r.kind} ${r.name}: ${r.outcome}`,
          r.kind === 'Workload' && here(r) ? [' — ', h('a', { href: `#/workloads/${enc(r.name)}` }, 'open')] : '',
          here(r) ? '' : h('span', { class: 'muted' }, ` (in ${[r.zone, r.workspace].filter(Boolean).join('/')})`),
          (r.warnings ?? []).map((w) => h('div', { class: 'muted' }, w)));
      }
      const line = lineOf(r);
      const name = r.error.field ? h('code', { class: 'field' }, r.error.field) : '';
      return h('li', { class: 'error' }, `Document ${r.index + 1}: `,
        line === null ? name : h('button', { type: 'button', class: 'link', title: `Select line ${line + 1}`, onclick: () => select(line) }, name, ` (line ${line + 1})`),
        r.error.field ? ': ' : '', message(r));
    }));
    if (marked.length) select(marked[0]);
  };
  main.append(h('h1', {}, 'Apply'), form, note.element, results);
  editor.focus();
  return () => {};
}

function containerPath(session, name) {
  return `${scoped(session, 'containers')}/${enc(name)}`;
}

/** A container's output, followed as it comes. */
export function logs(main, session, name) {
  const note = notice();
  const output = h('pre', { class: 'logs', id: 'logs', tabindex: '0', 'aria-label': `Output of ${name}`, 'aria-live': 'polite' });
  main.append(h('h1', {}, `Logs of ${name}`),
    h('p', {}, h('a', { href: `#/containers/${enc(name)}/shell` }, 'Open a shell')), note.element, output);
  const controller = new AbortController();
  let lines = 0;
  streamLines(`${containerPath(session, name)}/logs?follow=true&tail=1000`, controller.signal, (line) => {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    output.append(`${line}\n`);
    if (++lines > 5000) { output.firstChild.remove(); lines--; }
    if (atBottom) output.scrollTop = output.scrollHeight;
  }).then(() => note.ok('The output ended.'))
    .catch((error) => { if (!controller.signal.aborted) note.fail(error); });
  return () => controller.abort();
}

/** A shell in a container. The terminal (most of the console's bytes) loads on first use. */
export function shell(main, session, name) {
  main.append(h('h1', {}, `Shell in ${name}`),
    h('p', {}, h('a', { href: `#/containers/${enc(name)}/logs` }, 'Logs')));
  let close = null;
  let closed = false;
  import('./shell.js').then(({ openShell }) => {
    if (!closed) close = openShell(main, containerPath(session, name));
  });
  return () => { closed = true; close?.(); };
}

/** The zone's nodes and a map of its GPUs: booked, free or not allowed; filter by model. */
export function nodes(main, session) {
  const note = notice();
  const nodeTable = virtualTable([
    { name: 'Node', cell: (n) => n.metadata.name },
    { name: 'Status', cell: phase, width: '7em' },
    { name: 'Scheduling', cell: (n) => n.status?.scheduling ?? '', width: '8em' },
    { name: 'GPUs', cell: (n) => (n.status?.observed?.gpus ?? []).length, width: '4em' },
    { name: 'CPUs', cell: (n) => n.status?.observed?.cpu?.count ?? '', width: '4em' },
    { name: 'Memory', cell: (n) => bytes(n.status?.observed?.memoryBytes), width: '6em' },
  ], { label: 'Nodes', empty: 'No nodes in this zone: join one with `dora node` (README: Nodes, containers and volumes).' });
  const filter = h('select', { id: 'model', 'aria-label': 'GPU model' }, h('option', { value: '' }, 'All models'));
  const map = h('div', { class: 'gpumap', role: 'list', 'aria-label': 'GPUs' });
  const legend = h('p', { class: 'legend' },
    h('span', { class: 'gpu free' }, 'free'), h('span', { class: 'gpu booked' }, 'booked'),
    h('span', { class: 'gpu refused' }, 'not allowed'));
  main.append(h('h1', {}, `Nodes of zone ${session.zone}`), note.element, nodeTable.element,
    h('h2', {}, 'GPUs'), h('p', {}, filter), legend, map);
  let gpus = [];
  const draw = () => {
    const model = filter.value;
    const shown = gpus.filter((g) => !model || g.status?.productName === model);
    map.replaceChildren(...shown.map((g) => {
      const s = g.status ?? {};
      const state = s.allowed === false ? 'refused' : s.booked ? 'booked' : 'free';
      const facts = [s.productName, bytes(s.memoryBytes),
        s.temperature !== undefined ? `${s.temperature}°C` : '', s.powerWatts !== undefined ? `${s.powerWatts} W` : ''].filter(Boolean);
      return h('div', { class: `gpu ${state}`, role: 'listitem', tabindex: '0', title: s.container ? `held by ${s.container}` : state },
        h('strong', {}, g.metadata.name), h('span', {}, s.container ? `booked by ${s.container}` : state),
        ...facts.map((f) => h('span', {}, f)));
    }));
    if (!shown.length) map.replaceChildren(h('p', { class: 'muted' }, 'No GPUs in this zone.'));
  };
  filter.addEventListener('change', draw);
  // The GPU view is made from the nodes' reports and bookings: read it again when a node
  // changes (at most every 2 s), never on a timer.
  let reading = null;
  const reread = () => {
    if (reading) return;
    reading = setTimeout(async () => {
      try {
        gpus = (await call('GET', zoned(session, 'gpus'))).items ?? [];
        const models = [...new Set(gpus.map((g) => g.status?.productName).filter(Boolean))].sort();
        const chosen = filter.value;
        filter.replaceChildren(h('option', { value: '' }, 'All models'),
          ...models.map((m) => h('option', { value: m, selected: m === chosen }, m)));
        draw();
      } catch (error) { note.fail(error); }
      reading = null;
    }, 200);
  };
  const stop = watchCollection(zoned(session, 'nodes'), (nodesByName) => {
    nodeTable.set(byName(nodesByName));
    reread();
  }, note.fail);
  return () => { stop(); clearTimeout(reading); };
}

/**
 * Credits: per zone the session may read accounts in, each user's use this week against the
 * weekly limit as a chart, and the next reset. A zone that comes or goes (the Zone watch)
 * asks the server again which zones those are.
 */
export function credits(main, session) {
  const note = notice();
  const list = h('div', { class: 'credits', id: 'credits' });
  main.append(h('h1', {}, 'Credits this week'),
    h('p', { class: 'muted' }, 'Use per user and zone against the weekly limit (the dark line). ',
      'A user at the limit has their workloads in that zone paused until the reset.'),
    note.element, list);
  const shown = new Map();
  const follow = (zones) => {
    for (const [zone, chart] of shown) {
      if (!zones.includes(zone)) { chart.stop(); chart.element.remove(); shown.delete(zone); }
    }
    for (const zone of zones) if (!shown.has(zone)) shown.set(zone, zoneCredits(zone, note));
    list.replaceChildren(...(zones.length
      ? zones.map((zone) => shown.get(zone).element)
      : [h('p', { class: 'muted' }, 'Your roles let you read the credits of no zone.')]));
  };
  follow(session.creditZones ?? []);
  let names = null;
  const stopZones = watchCollection('/v1/zones', async (zones) => {
    const now = [...zones.keys()].sort().join(',');
    if (names === null || now === names) { names = now; return; }
    names = now;
    try { follow((await call('GET', '/v1/console/session')).creditZones ?? []); } catch (error) { note.fail(error); }
  }, note.fail);
  return () => { stopZones(); for (const chart of shown.values()) chart.stop(); };
}

/** `used` as a share of `limit`: `37%`, or `<1%` for a little use. */
function share(used, limit) {
  const percent = limit > 0 ? (used / limit) * 100 : 100;
  return used > 0 && percent < 1 ? '<1%' : `${Math.round(percent)}%`;
}

/** One zone's accounts as bars on one scale, the limit marked on each, and the next reset. */
function zoneCredits(zone, note) {
  const reset = h('span', { class: 'muted reset' });
  const chart = h('div', { class: 'chart', role: 'list', 'aria-label': `Credits in zone ${zone}` });
  const scale = h('div', { class: 'scale muted', 'aria-hidden': 'true' });
  const element = h('section', { class: 'zone-credits', 'data-zone': zone },
    h('h2', {}, `Zone ${zone} `, reset), chart, scale);
  const stop = watchCollection(`/v1/zones/${enc(zone)}/usercredits`, (map) => {
    const accounts = byName(map).map((c) => ({ user: c.spec?.user ?? c.metadata.name, ...(c.status?.computed ?? {}) }));
    // One scale for the zone, so that bars and limits compare at a glance.
    const top = Math.max(1, ...accounts.map((a) => Math.max(a.weekly ?? 0, a.limit ?? 0))) * 1.05;
    const percent = (n) => `${Math.min(100, (n / top) * 100)}%`;
    chart.replaceChildren(...(accounts.length ? accounts.map((a) => {
      const used = a.weekly ?? 0;
      const track = h('div', {
        class: `track${a.outOfCredit ? ' out' : ''}`, role: 'meter', 'aria-label': `Credits of ${a.user} in zone ${zone}`,
        'aria-valuemin': '0', 'aria-valuemax': a.limit ?? top, 'aria-valuenow': used,
      }, h('div', { class: 'fill' }), a.limit === undefined ? '' : h('div', { class: 'limit', title: `limit ${a.limit.toFixed(2)}` }));
      track.firstChild.style.width = percent(used);
      if (a.limit !== undefined) track.lastChild.style.left = percent(a.limit);
      const words = a.limit === undefined ? `${used.toFixed(2)}, no limit`
        : `${used.toFixed(2)} of ${a.limit.toFixed(2)} (${share(used, a.limit)})`;
      return h('div', {
        class: 'credit', role: 'listitem', 'data-user': a.user, 'data-used': used, 'data-limit': a.limit,
      }, h('strong', {}, a.user), track, h('span', {}, words, a.outOfCredit ? h('span', { class: 'out' }, ' out of credit') : ''));
    }) : [h('p', { class: 'muted' }, 'No credit accounts in this zone yet: they start with the first container or limit.')]));
    scale.replaceChildren(h('span', {}, '0'), h('span', {}, top.toFixed(top < 10 ? 1 : 0)));
    const next = Math.min(...accounts.map((a) => a.reset).filter((t) => typeof t === 'number'));
    reset.textContent = Number.isFinite(next)
      ? `· next reset ${new Date(next).toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', timeZoneName: 'short' })} (${until(next)})`
      : '';
  }, (error) => note.fail(new Error(`zone ${zone}: ${error.message}`)));
  return { element, stop };
}

/** Where the objects of `kind` (from `/v1/kinds`) are, for the session. */
function collectionOf(session, kind) {
  const zone = `/v1/zones/${enc(session.zone)}`;
  const workspace = `/workspaces/${enc(session.workspace)}`;
  switch (kind.scope) {
    case 'cluster': return `/v1/${kind.plural}`;
    case 'workspaced': return `/v1${workspace}/${kind.plural}`;
    case 'zoned': return `${zone}/${kind.plural}`;
    default: return `${zone}${workspace}/${kind.plural}`;
  }
}

/** A column's value in `object`, as `dora get` shows it: the first pointer that holds one. */
function columnText(column, object) {
  const read = (value, pointer) => {
    const [list, rest] = pointer.split('/*');
    let at = value;
    for (const key of list.split('/').slice(1)) at = at?.[key.replaceAll('~1', '/').replaceAll('~0', '~')];
    if (rest === undefined) return at;
    return Array.isArray(at) ? at.map((item) => read(item, rest)).filter((v) => v !== undefined) : undefined;
  };
  const value = column.pointers.map((p) => read(object, p)).find((v) => v !== undefined && v !== null);
  if (value === undefined) return '';
  switch (column.format) {
    case 'count': return Array.isArray(value) ? value.length : value;
    case 'command': return Array.isArray(value) ? value.join(' ') : value;
    case 'keys': return Object.keys(value).join(',');
    case 'bytes': return bytes(value);
    case 'decimal': return Number(value).toFixed(2);
    case 'age': return age(value);
    case 'until': return until(value);
    default: return Array.isArray(value) ? value.join(',') : typeof value === 'object' ? JSON.stringify(value) : value;
  }
}

/** The kinds defined at run time (Definitions), each a link to its objects. */
export function kinds(main) {
  const note = notice();
  const list = h('ul', { class: 'kinds' });
  main.append(h('h1', {}, 'Kinds defined at run time'), note.element, list);
  call('GET', '/v1/kinds').then((answer) => {
    const defined = answer.items.filter((k) => !k.builtIn);
    list.replaceChildren(...(defined.length
      ? defined.map((k) => h('li', {}, h('a', { href: `#/kinds/${enc(k.plural)}` }, k.name), h('span', { class: 'muted' }, ` ${k.plural}, ${k.scope}`)))
      : [h('li', { class: 'muted' }, 'None: apply a Definition to add one (see examples/definition.yaml).')]));
  }, note.fail);
  return () => {};
}

/** The objects of a defined kind, live, with the columns its Definition declares. */
export function kind(main, session, plural) {
  const note = notice();
  const heading = h('h1', {}, plural);
  main.append(heading, note.element);
  let stop = () => {};
  let stopped = false;
  call('GET', '/v1/kinds').then((answer) => {
    const found = answer.items.find((k) => k.plural === plural);
    if (stopped) return;
    if (!found) { note.fail(new Error(`no kind ${plural} is served; see the Kinds page`)); return; }
    heading.textContent = `${found.name} objects`;
    const table = virtualTable([
      { name: 'Name', cell: (o) => o.metadata.name },
      ...found.columns.map((c) => ({ name: c.name, cell: (o) => columnText(c, o) })),
      { name: 'Age', cell: (o) => ageOf(o.metadata.created), width: '4em' },
    ], { label: `${found.name} objects`, empty: `No ${found.name} objects here.` });
    main.append(table.element);
    stop = watchCollection(collectionOf(session, found), (map) => table.set(byName(map)), note.fail);
  }, note.fail);
  return () => { stopped = true; stop(); };
}
