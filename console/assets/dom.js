// Building the page: elements, times, and a virtualized table that draws only the rows in view.

/** An element with attributes (`on*` are listeners) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** `5s`, `3m`, `2h`, `4d`: the time since an RFC 3339 time or Unix milliseconds. */
export function age(time) {
  if (time === undefined || time === null) return '';
  const then = typeof time === 'number' ? time : Date.parse(time);
  if (Number.isNaN(then)) return '';
  return span(Math.max(0, Date.now() - then));
}

/**
 * The time since `time` as an element that keeps counting: the page's clock (see
 * `tickAges`) updates every such element in view, without asking the server.
 */
export function ageOf(time) {
  const then = typeof time === 'number' ? time : Date.parse(time);
  if (Number.isNaN(then)) return '';
  return h('time', { class: 'age', datetime: new Date(then).toISOString() }, age(then));
}

/** Brings the ages in the page up to date (called every few seconds). */
export function tickAges() {
  for (const element of document.querySelectorAll('time.age')) {
    element.textContent = age(Date.parse(element.dateTime));
  }
}

/** The time until a moment, as `in 3h`. */
export function until(time) {
  const then = typeof time === 'number' ? time : Date.parse(time);
  if (Number.isNaN(then)) return '';
  return `in ${span(Math.max(0, then - Date.now()))}`;
}

function span(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** `16Gi`: a byte count in binary units. */
export function bytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Math.round(n * 10) / 10}${units[i]}`;
}

const ROW = 34;

/**
 * A table of many rows drawn lazily: only those in view (and a few more) are in the page, so
 * that 10,000 rows scroll as smoothly as 10. `columns` are `{name, cell(item) -> Node|string}`;
 * `set(items)` replaces the rows; without any, the table says `empty`. Cells hold links and
 * buttons for the keyboard to reach.
 */
export function virtualTable(columns, { label, empty }) {
  const template = columns.map((c) => c.width ?? 'minmax(6em, 1fr)').join(' ');
  const head = h('div', { class: 'vrow vhead', role: 'row' },
    columns.map((c) => h('span', { role: 'columnheader' }, c.name)));
  head.style.gridTemplateColumns = template;
  const spacer = h('div', { class: 'vspacer' });
  const body = h('div', { class: 'vbody', role: 'rowgroup' });
  // Focusable, so that the arrow keys and Page Up/Down scroll it.
  const scroller = h('div', { class: 'vscroll', role: 'table', 'aria-label': label, tabindex: '0' }, head, spacer);
  spacer.append(body);
  let items = [];
  let drawn = '';
  const draw = () => {
    const shown = Math.max(items.length, 1);
    // As tall as its rows (and borders and a horizontal scroll bar, on a narrow screen), up
    // to the stylesheet's max-height; then it scrolls. Measured at every draw: a table drawn
    // before it was in the page had no frame yet, and its resize draws it again.
    const frame = scroller.offsetHeight - scroller.clientHeight;
    scroller.style.height = `${(shown + 1) * ROW + frame}px`;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 10);
    const count = Math.ceil(scroller.clientHeight / ROW) + 20;
    const last = Math.min(items.length, first + count);
    const key = `${first}:${last}:${items.length}:${items.version}`;
    if (key === drawn) return;
    drawn = key;
    spacer.style.height = `${shown * ROW}px`;
    body.style.transform = `translateY(${first * ROW}px)`;
    if (!items.length) {
      body.replaceChildren(h('div', { class: 'vrow vempty', role: 'row' }, h('span', { role: 'cell', class: 'muted' }, empty)));
      return;
    }
    const rows = [];
    for (let i = first; i < last; i++) {
      const item = items[i];
      const cells = columns.map((c) => h('span', { role: 'cell' }, c.cell(item)));
      const row = h('div', { class: 'vrow', role: 'row' }, cells);
      row.style.gridTemplateColumns = template;
      rows.push(row);
    }
    body.replaceChildren(...rows);
  };
  let pending = false;
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  };
  scroller.addEventListener('scroll', schedule, { passive: true });
  new ResizeObserver(schedule).observe(scroller);
  let version = 0;
  return {
    element: scroller,
    set(next) { items = next; items.version = ++version; schedule(); },
  };
}
