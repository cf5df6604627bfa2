// The API, as the CLI sees it, through the session cookie: calls, and watches that keep a
// collection up to date from the change feed (no polling).

/** An answer of the API that is not a success: its status and error (reason, message, field). */
export class ApiError extends Error {
  constructor(status, error, body) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.error = error ?? {};
    this.body = body;
  }
}

/** Called with the error when the session has ended (401), so that the page asks to log in. */
let onLoggedOut = () => {};
export function whenLoggedOut(callback) { onLoggedOut = callback; }

/**
 * `method path` with an optional body; the parsed JSON answer, or throws an `ApiError`.
 * Every request carries `X-Dora-Console`: the API refuses cookie-authenticated writes
 * without it (another site's forms cannot set it).
 */
export async function call(method, path, body, contentType = 'application/json') {
  const headers = { 'X-Dora-Console': '1' };
  if (body !== undefined) headers['Content-Type'] = contentType;
  const response = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  const text = await response.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  if (!response.ok) {
    const error = new ApiError(response.status, json?.error, json);
    if (response.status === 401 && !path.startsWith('/v1/console/login')) onLoggedOut(error);
    throw error;
  }
  return json;
}

/** The lines of a streaming answer (NDJSON, logs) as they come, until `signal` aborts. */
export async function streamLines(path, signal, onLine) {
  const response = await fetch(path, { headers: { 'X-Dora-Console': '1' }, signal });
  if (!response.ok) {
    const text = await response.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    const error = new ApiError(response.status, json?.error ?? { message: text }, json);
    if (response.status === 401) onLoggedOut(error);
    throw error;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += value;
    const lines = rest.split('\n');
    rest = lines.pop();
    for (const line of lines) onLine(line);
  }
  if (rest) onLine(rest);
}

/**
 * Keeps the objects of a collection (or one object) in a Map by name, from a watch: the
 * current items come first, then each change. A watch that ends is resumed from the last
 * version it told; one whose version has expired lists again. `onChange(map)` is called at
 * most once a frame; `map.membership` changes when names come or go. Returns a function that
 * stops it.
 */
export function watchCollection(path, onChange, onError = () => {}) {
  const controller = new AbortController();
  const objects = new Map();
  // Counts additions and removals, so that views sort again only when the names change.
  objects.membership = 0;
  let version = null;
  let scheduled = false;
  const changed = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; onChange(objects); });
  };
  const separator = path.includes('?') ? '&' : '?';
  (async () => {
    while (!controller.signal.aborted) {
      const from = version ? `&resourceVersion=${encodeURIComponent(version)}` : '';
      let restart = false;
      try {
        await streamLines(`${path}${separator}watch=true${from}`, controller.signal, (line) => {
          if (!line.trim()) return;
          const event = JSON.parse(line);
          if (event.type === 'ERROR') {
            if (event.status === 410) { version = null; restart = true; }
            if (event.status === 401) onLoggedOut(event.error);
            return;
          }
          if (event.resourceVersion) version = event.resourceVersion;
          if (event.type === 'BOOKMARK') return;
          const name = event.object?.metadata?.name;
          if (name === undefined) return;
          if (event.type === 'DELETED') {
            if (objects.delete(name)) objects.membership++;
          } else {
            if (!objects.has(name)) objects.membership++;
            objects.set(name, event.object);
          }
          changed();
        });
      } catch (error) {
        if (controller.signal.aborted) return;
        onError(error);
        if (error instanceof ApiError && error.status !== 503) return;
      }
      if (restart) { objects.clear(); objects.membership++; changed(); }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  // An empty collection sends nothing: tell the view it is empty rather than loading.
  changed();
  return () => controller.abort();
}

/** Path of a collection of a zoned and workspaced kind. */
export function scoped(session, plural) {
  return `/v1/zones/${encodeURIComponent(session.zone)}/workspaces/${encodeURIComponent(session.workspace)}/${plural}`;
}

/** Path of a collection of a zoned kind. */
export function zoned(session, plural) {
  return `/v1/zones/${encodeURIComponent(session.zone)}/${plural}`;
}
