/**
 * marquee-client.js: the protocol half of the Marquee demo client.
 *
 * This module speaks wire protocol version 1 (docs/protocol.md; this client
 * is explained in docs/web-client.md) and nothing else. It knows no DOM and no page: the
 * same code runs in a browser, in a test page, or in Node with a fake
 * WebSocket. The UI (app.js) only calls the methods below and listens to
 * events.
 *
 * What it does, and where to read it:
 *
 *   MarqueeClient            one WebSocket, owned for the lifetime of the page
 *     connect() / close()    start, stop for good
 *     reconnect()            drop the socket and open a fresh one at once
 *                            (after login and logout: the server reads the
 *                            cookie only at the upgrade)
 *     request(type, data)    a Promise per request, keyed by `eid`, with a
 *                            timeout; rejects with a MarqueeError
 *     watchHall(id)          a HallView: the live seat map of one screening,
 *                            kept in sync through pushes, gaps and reconnects
 *     startAuth/login/logout the login flow, including the two HTTP calls
 *                            that set and clear the HttpOnly cookie
 *     events                 'state'   connection state changed
 *                            'session' the server said who we are
 *                            'push'    every frame that is not a response
 *
 *   HallView                 seats by id, version, synced flag;
 *                            event 'change' whenever the map changed,
 *                            event 'error' when the screening cannot be shown
 *
 * Three rules carry most of the design:
 *
 * 1. A frame is a response when its `eid` names a request we sent and its
 *    `type` is that request's type (or "error"). Everything else is a push and
 *    is routed by `type`. Hall pushes carry the eid of the subscribe request,
 *    which is already settled, so they can never be mistaken for a response.
 * 2. The server's seat map is the truth. The client never edits seats on its
 *    own; it applies `hall_update` only when `version` is exactly current + 1,
 *    ignores versions it already has, and fetches a whole snapshot when it sees
 *    a gap. A `hall_snapshot` push replaces the whole map.
 * 3. A connection is "live" when the server's first frame (`session`) has
 *    arrived, not merely when the socket opened. Requests made before that wait
 *    in a queue; subscriptions are made again on every new connection.
 */

/** The wire protocol version this client implements. */
export const PROTOCOL_VERSION = 1;

/** Error codes the server may answer (`error` field of a response). */
export const SERVER_ERROR_CODES = Object.freeze([
  'BAD_REQUEST', 'UNKNOWN_METHOD', 'UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND',
  'RATE_LIMITED', 'INVALID_CODE', 'USERNAME_TAKEN', 'SEAT_UNAVAILABLE',
  'HOLD_LIMIT', 'HOLD_EXPIRED', 'SCREENING_CLOSED', 'LIMIT', 'UNAVAILABLE',
  'INTERNAL',
]);

/**
 * Codes this client makes up itself; they never come from the server.
 * TIMEOUT: no answer in time. DISCONNECTED: the socket closed before the
 * answer came (the request may or may not have been carried out).
 * HTTP: an auth HTTP call failed without a contract error code.
 * SESSION_NOT_ESTABLISHED: after login the new connection is still anonymous,
 * i.e. the cookie did not travel with the upgrade (page and socket on
 * different host names, or cookies blocked).
 */
export const CLIENT_ERROR_CODES = Object.freeze([
  'TIMEOUT', 'DISCONNECTED', 'HTTP', 'SESSION_NOT_ESTABLISHED',
]);

/** Connection states, as shown by the page's indicator. */
export const STATES = Object.freeze(['connecting', 'live', 'reconnecting', 'offline']);

/** Server errors worth retrying on their own after a pause (used for resync). */
const TRANSIENT = new Set(['RATE_LIMITED', 'UNAVAILABLE', 'INTERNAL', 'TIMEOUT']);

/** A failed request: `code` is a contract error code or a client code above. */
export class MarqueeError extends Error {
  constructor(code, message, { type = null, eid = null, data = {} } = {}) {
    super(message || code);
    this.name = 'MarqueeError';
    /** Contract error code, e.g. "SEAT_UNAVAILABLE", or a CLIENT_ERROR_CODES one. */
    this.code = code;
    /** The request type that failed, e.g. "hold_seats". */
    this.type = type;
    /** The request's correlation id. */
    this.eid = eid;
    /** The error's `data`: `message` plus details such as `seat_ids`. */
    this.data = data && typeof data === 'object' ? data : {};
  }

  /** RATE_LIMITED: whole seconds to wait, else null. */
  get retryAfterS() {
    return Number.isFinite(this.data.retry_after_s) ? this.data.retry_after_s : null;
  }

  /** SEAT_UNAVAILABLE: the seats that were not available; SEAT_RULE: the seats the rule is about; else []. */
  get seatIds() {
    return Array.isArray(this.data.seat_ids) ? this.data.seat_ids : [];
  }

  /** SEAT_RULE: which rule refused ("orphan" or "companion"), else null. */
  get rule() {
    return typeof this.data.rule === 'string' ? this.data.rule : null;
  }
}

/**
 * Delay before reconnect attempt number `attempt` (1 for the first retry):
 * exponential growth capped at `maxMs`, with "equal jitter" (half the delay
 * fixed, half random) so that a thousand tabs dropped by one server restart
 * do not all knock again in the same millisecond.
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 15000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

const DEFAULTS = {
  /** WebSocket URL, e.g. "ws://127.0.0.1:3001/". Required. */
  url: null,
  /** Prefix for the auth HTTP calls; '' means the page's own origin. */
  httpBase: '',
  /** How long a request may wait for its answer (queue time included). */
  requestTimeoutMs: 10000,
  /** Reconnect backoff: first delay, cap. */
  backoffBaseMs: 500,
  backoffMaxMs: 15000,
  /** After this many failed attempts in a row the state reads "offline" (retries go on). */
  offlineAfter: 4,
  /** A connection live at least this long resets the backoff when it drops. */
  stableMs: 10000,
  /** Application-level ping while live, to notice a silently dead network. 0 turns it off. */
  heartbeatMs: 25000,
  heartbeatTimeoutMs: 10000,
  /** How long login()/logout() wait for the new connection's session frame. */
  sessionTimeoutMs: 15000,
  /** Log every frame to the console. */
  debug: false,
  /** Injected for tests; default to the browser's. */
  WebSocketImpl: globalThis.WebSocket,
  fetchImpl: globalThis.fetch ? globalThis.fetch.bind(globalThis) : null,
  random: Math.random,
};

export class MarqueeClient extends EventTarget {
  #opts;
  /** The current socket, or null between attempts. Frames from any other socket are ignored. */
  #ws = null;
  #state = 'offline';
  /** `data` of the last `session` frame: {user, server, protocol}. */
  #session = null;
  /** eid -> {type, frame, resolve, reject, timer, sentOn}; sentOn is the socket it went out on, or null while queued. */
  #pending = new Map();
  #nextEid = 1;
  /** Failed connection attempts in a row; drives the backoff. */
  #failures = 0;
  #retryTimer = null;
  #retryAt = null;
  /** When the current socket became live (its session frame arrived, ms), or null. */
  #liveSince = null;
  /** True after close(): no more reconnects. */
  #stopped = true;
  #heartbeat = null;
  /** screening_id -> HallView for every hall the page watches. */
  #halls = new Map();
  /** screening_id -> Promise of an unsubscribe still on its way (see watchHall). */
  #unsubscribing = new Map();
  /** Waiters for the next connection's session frame (login/logout). */
  #sessionWaiters = [];
  /** Server clock minus ours, from the `ts` of the last frame (ms). */
  #clockOffset = 0;

  constructor(options = {}) {
    super();
    this.#opts = { ...DEFAULTS, ...options };
    if (!this.#opts.url) throw new TypeError('MarqueeClient: options.url is required');
    if (!this.#opts.WebSocketImpl) throw new TypeError('MarqueeClient: no WebSocket implementation');
    // In a browser: knock again at once when the network comes back or the tab
    // becomes visible, instead of sleeping through the rest of a long backoff.
    if (typeof window !== 'undefined' && window.addEventListener) {
      window.addEventListener('online', () => this.retryNow());
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible') this.retryNow();
      });
    }
  }

  /** One of STATES. */
  get state() { return this.#state; }
  /** `data` of the last session frame, or null before the first. */
  get session() { return this.#session; }
  /** {id, username} when logged in, else null. */
  get user() { return this.#session ? this.#session.user : null; }
  /** When the next reconnect attempt is due (ms since epoch), or null. */
  get retryAt() { return this.#retryAt; }
  /** The server's clock (ms), estimated from frame timestamps; use it for hold countdowns. */
  serverNow() { return Date.now() + this.#clockOffset; }

  // ---------------------------------------------------------------- lifecycle

  /** Open the connection; reconnects automatically until close(). */
  connect() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#failures = 0;
    this.#setState('connecting');
    this.#open();
  }

  /** Close for good: no reconnect. Pending requests fail with DISCONNECTED. */
  close() {
    this.#stopped = true;
    this.#clearRetry();
    this.#teardown();
    for (const [eid, p] of this.#pending) this.#settle(eid, p, new MarqueeError('DISCONNECTED', 'client closed', { type: p.type, eid }));
    this.#setState('offline');
  }

  /**
   * Drop the current socket and open a new one now. Resolves with the new
   * connection's session data. The login and logout flows need this because
   * the server looks at the cookie only during the WebSocket upgrade.
   */
  reconnect() {
    this.#stopped = false;
    this.#clearRetry();
    this.#teardown();
    this.#failures = 0;
    const next = this.#nextSession();
    this.#setState('connecting');
    this.#open();
    return next;
  }

  /** Skip the rest of a backoff wait (e.g. a "Retry now" button). */
  retryNow() {
    if (this.#stopped || this.#ws) return; // stopped, or an attempt is already under way
    this.#clearRetry();
    this.#open();
  }

  #open() {
    this.#retryAt = null;
    let ws;
    try {
      ws = new this.#opts.WebSocketImpl(this.#opts.url);
    } catch (err) {
      // A malformed URL throws synchronously; count it as a failed attempt.
      this.#log('cannot open socket', err);
      this.#failures += 1;
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    ws.onmessage = (ev) => this.#onFrame(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code, ev.reason);
    ws.onerror = () => { /* a close event always follows; handled there */ };
  }

  #onClose(ws, code, reason) {
    if (ws !== this.#ws) return; // an old socket we already let go of
    this.#log(`socket closed ${code} ${reason || ''}`);
    this.#lost();
  }

  /** The current socket is gone unexpectedly: clean up, then back off and retry. */
  #lost() {
    const stable = this.#liveSince !== null && Date.now() - this.#liveSince >= this.#opts.stableMs;
    this.#teardown();
    if (this.#stopped) return;
    // A connection that stayed up a while restarts the backoff; one that died
    // at once (server refusing us, 1013 "try again later") keeps growing it.
    this.#failures = stable ? 1 : this.#failures + 1;
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    const delay = backoffDelay(this.#failures, {
      baseMs: this.#opts.backoffBaseMs, maxMs: this.#opts.backoffMaxMs, random: this.#opts.random,
    });
    this.#retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => { this.#retryTimer = null; this.#open(); }, delay);
    this.#setState(this.#failures >= this.#opts.offlineAfter ? 'offline' : 'reconnecting');
  }

  #clearRetry() {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#retryAt = null;
  }

  /**
   * Let go of the current socket (if any). Requests already sent on it can
   * no longer be answered, since answers come on the same connection, so they
   * fail with DISCONNECTED; queued ones stay queued for the next connection.
   * Every watched hall becomes stale until the next subscribe answers.
   */
  #teardown() {
    const ws = this.#ws;
    this.#ws = null;
    this.#liveSince = null;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000); } catch { /* already closed */ }
    }
    for (const [eid, p] of this.#pending) {
      if (p.sentOn && p.sentOn === ws) {
        this.#settle(eid, p, new MarqueeError('DISCONNECTED', 'connection lost before the answer', { type: p.type, eid }));
      }
    }
    for (const hall of this.#halls.values()) hall._stale();
  }

  #setState(state) {
    if (state === this.#state && state !== 'reconnecting' && state !== 'offline') return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent('state', {
      detail: { state, attempt: this.#failures, retryAt: this.#retryAt },
    }));
  }

  // ---------------------------------------------------------------- frames in

  #onFrame(ws, raw) {
    if (ws !== this.#ws) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      this.#log('unreadable frame', raw);
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    this.#log('<-', msg);
    if (typeof msg.ts === 'number') this.#clockOffset = msg.ts - Date.now();

    // Rule 1: a response names a request we sent on this socket, with its type.
    const p = typeof msg.eid === 'string' ? this.#pending.get(msg.eid) : undefined;
    if (p && p.sentOn === ws && (msg.type === p.type || msg.type === 'error')) {
      const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
      if (msg.error) {
        this.#settle(msg.eid, p, new MarqueeError(msg.error, data.message, { type: p.type, eid: msg.eid, data }));
      } else {
        this.#settle(msg.eid, p, null, data);
      }
      return;
    }

    // Everything else is a push, routed by type.
    switch (msg.type) {
      case 'session':
        this.#onSession(ws, msg.data || {});
        break;
      case 'hall_update':
      case 'hall_snapshot': {
        const hall = msg.data && this.#halls.get(msg.data.screening_id);
        if (hall) {
          if (msg.type === 'hall_update') hall._update(msg.data);
          else hall._snapshot(msg.data, 'push');
        }
        break;
      }
      default:
        // An error with eid null (the server could not read a frame of ours),
        // or a push type this client does not know yet: surface, don't crash.
        break;
    }
    this.dispatchEvent(new CustomEvent('push', { detail: msg }));
  }

  #onSession(ws, data) {
    // The first session frame on a socket makes it live; later ones are pushes
    // (the token was revoked or expired: user null).
    const initial = this.#liveSince === null;
    this.#session = data;
    if (initial) {
      this.#liveSince = Date.now();
      this.#failures = 0;
      this.#setState('live');
      if (data.protocol !== PROTOCOL_VERSION) {
        console.warn(`Marquee: server speaks protocol ${data.protocol}, this client ${PROTOCOL_VERSION}`);
      }
    }
    // UI first (it learns who we are), then the queue and the subscriptions.
    this.dispatchEvent(new CustomEvent('session', { detail: { session: data, initial } }));
    if (!initial) return; // a later session push: user signed out elsewhere; snapshots follow from the server
    for (const w of this.#sessionWaiters.splice(0)) { clearTimeout(w.timer); w.resolve(data); }
    for (const [eid, p] of this.#pending) if (!p.sentOn) this.#send(eid, p);
    for (const hall of this.#halls.values()) hall._sync('subscribe_hall');
    this.#startHeartbeat(ws);
  }

  #startHeartbeat(ws) {
    if (!this.#opts.heartbeatMs) return;
    this.#heartbeat = setInterval(() => {
      this.request('ping', {}, { timeoutMs: this.#opts.heartbeatTimeoutMs }).catch((err) => {
        // No pong in time on a socket that still looks open: the network died
        // without a close frame. Treat it as lost. Any other answer (even an
        // error) proves the connection works.
        if (err.code === 'TIMEOUT' && this.#ws === ws) this.#lost();
      });
    }, this.#opts.heartbeatMs);
  }

  #nextSession() {
    return new Promise((resolve, reject) => {
      const w = { resolve, timer: null };
      w.timer = setTimeout(() => {
        this.#sessionWaiters = this.#sessionWaiters.filter((x) => x !== w);
        reject(new MarqueeError('TIMEOUT', 'no session from the server after reconnecting'));
      }, this.#opts.sessionTimeoutMs);
      this.#sessionWaiters.push(w);
    });
  }

  // ---------------------------------------------------------------- requests

  /**
   * Send one request; resolves with the answer's `data`, rejects with a
   * MarqueeError. Before the connection is live the request waits in a queue
   * (its timeout runs meanwhile) and goes out when the next session frame
   * arrives.
   */
  request(type, data = {}, { timeoutMs = this.#opts.requestTimeoutMs } = {}) {
    const eid = `c-${this.#nextEid++}`;
    // `ts` is optional in a request; we send ours so server logs can show lag.
    const frame = JSON.stringify({ type, data, eid, ts: Date.now() });
    return new Promise((resolve, reject) => {
      const p = { type, frame, resolve, reject, sentOn: null, timer: null };
      p.timer = setTimeout(() => {
        this.#settle(eid, p, new MarqueeError('TIMEOUT', `no answer to ${type} in ${timeoutMs} ms`, { type, eid }));
      }, timeoutMs);
      this.#pending.set(eid, p);
      if (this.#state === 'live' && this.#ws) this.#send(eid, p);
    });
  }

  #send(eid, p) {
    this.#log('->', p.frame);
    p.sentOn = this.#ws;
    this.#ws.send(p.frame);
  }

  #settle(eid, p, err, data) {
    if (this.#pending.get(eid) !== p) return; // already settled (e.g. timed out)
    this.#pending.delete(eid);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(data);
  }

  // ---------------------------------------------------------------- halls

  /**
   * Watch the live seat map of a screening. Returns its HallView at once; the
   * view fills when the subscribe answer arrives (event 'change') and stays in
   * sync, across reconnects too, until unwatchHall().
   */
  watchHall(screeningId) {
    let hall = this.#halls.get(screeningId);
    if (hall) return hall;
    hall = new HallView(screeningId, (type, data) => this.request(type, data), () => this.#state === 'live');
    this.#halls.set(screeningId, hall);
    // Answers may come out of order: if an unsubscribe of the same screening
    // is still on its way, subscribe only after it, or the server could end up
    // unsubscribed while we believe we are subscribed.
    const before = this.#unsubscribing.get(screeningId) || Promise.resolve();
    before.then(() => { if (this.#halls.get(screeningId) === hall && this.#state === 'live') hall._sync('subscribe_hall'); });
    return hall;
  }

  /** Stop watching; tells the server (unsubscribe_hall) when connected. */
  unwatchHall(screeningId) {
    const hall = this.#halls.get(screeningId);
    if (!hall) return;
    this.#halls.delete(screeningId);
    const inflight = hall._dispose();
    if (this.#state !== 'live') return; // the subscription dies with the socket anyway
    // Same ordering concern: unsubscribe only after our own subscribe settled.
    const done = inflight
      .then(() => this.request('unsubscribe_hall', { screening_id: screeningId }))
      .catch(() => { /* best effort: a lost socket drops the subscription anyway */ })
      .finally(() => {
        if (this.#unsubscribing.get(screeningId) === done) this.#unsubscribing.delete(screeningId);
      });
    this.#unsubscribing.set(screeningId, done);
  }

  /** The HallView of a watched screening, or undefined. */
  hall(screeningId) { return this.#halls.get(screeningId); }

  // ---------------------------------------------------------------- auth

  /** auth_start: {status:"user"} or {status:"candidate", qr_code, otpauth_url, secret}. */
  startAuth(username) {
    return this.request('auth_start', { username });
  }

  /**
   * The login (and registration) flow, steps 4 to 6:
   * auth_verify over the socket -> POST /auth/session with the token (the
   * server answers with an HttpOnly cookie; page JavaScript never keeps the
   * token) -> a new WebSocket, whose upgrade carries the cookie.
   * Resolves with {user, expires_at, session}.
   */
  async login(username, code) {
    const verified = await this.request('auth_verify', { username, code });
    await this.#post('/auth/session', { token: verified.token });
    const session = await this.reconnect();
    if (!session.user) {
      throw new MarqueeError('SESSION_NOT_ESTABLISHED',
        'the cookie did not reach the WebSocket server (open the page and the socket on the same host name)');
    }
    return { user: verified.user, expires_at: verified.expires_at, session };
  }

  /**
   * Sign out: `logout` over the socket (revokes the token everywhere), then
   * POST /auth/logout (clears the cookie; it also revokes, so a failed first
   * step does no harm), then a new, anonymous connection.
   */
  async logout() {
    try {
      await this.request('logout', {}, { timeoutMs: 3000 });
    } catch (err) {
      this.#log('logout over the socket failed; the HTTP call still revokes', err);
    }
    await this.#post('/auth/logout');
    return this.reconnect();
  }

  async #post(path, body) {
    if (!this.#opts.fetchImpl) throw new MarqueeError('HTTP', 'no fetch available');
    const init = { method: 'POST', credentials: 'same-origin', headers: {} };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await this.#opts.fetchImpl(this.#opts.httpBase + path, init);
    } catch (err) {
      throw new MarqueeError('HTTP', `${path}: ${err.message}`, { data: { status: 0 } });
    }
    if (res.ok) {
      // Read the (empty) body so the browser finishes the request instead of aborting it.
      if (typeof res.text === 'function') await res.text().catch(() => {});
      return;
    }
    let code = 'HTTP';
    try {
      const json = await res.json();
      if (json && typeof json.error === 'string') code = json.error;
    } catch { /* not JSON */ }
    throw new MarqueeError(code, `${path} answered ${res.status}`, { data: { status: res.status } });
  }

  #log(...args) {
    if (this.#opts.debug) console.debug('[marquee]', ...args);
  }
}

/**
 * The live seat map of one screening, kept by the client.
 *
 * Fields (read-only for the UI):
 *   screeningId, hall {id, name}, version (number or null before the first
 *   snapshot), seats (Map id -> {id,row,number,x,y,kind,status,mine}),
 *   synced (false while a snapshot is awaited: after a gap, a reconnect, or
 *   before the first answer).
 *
 * Event 'change', detail {reason, changed}:
 *   reason  "subscribe" | "resync" | "push" (whole map replaced, changed null),
 *           "update" (changed: the seat ids of one hall_update),
 *           "stale" (connection lost; map kept but may be out of date),
 *           "gap" (a version was missed; a resync is on its way)
 * Event 'error', detail {error: MarqueeError, retrying}: a snapshot request
 *   failed; when `retrying` is false the screening cannot be shown (NOT_FOUND…).
 */
export class HallView extends EventTarget {
  #request;
  #isLive;
  /** Bumped by every new sync attempt and by dispose: answers of older attempts are dropped. */
  #gen = 0;
  /** hall_updates that arrived while not synced, applied after the snapshot. */
  #buffer = [];
  #waiters = [];
  #retryTimer = null;
  #disposed = false;
  /** Promise of the latest sync request, settled either way. */
  #inflight = Promise.resolve();

  constructor(screeningId, request, isLive) {
    super();
    this.screeningId = screeningId;
    this.hall = null;
    /** Price per seat kind from the snapshot (`{"standard":1150,…}`), or null from a server without box office. */
    this.prices = null;
    this.version = null;
    this.seats = new Map();
    this.synced = false;
    this.#request = request;
    this.#isLive = isLive;
  }

  /**
   * Resolves true once the map has reached `version` (e.g. the `version` in a
   * hold_seats answer: the hall_update carrying our own change has then been
   * applied), or false after `timeoutMs`.
   */
  waitForVersion(version, timeoutMs = 5000) {
    if (this.synced && this.version !== null && this.version >= version) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = { version, resolve, timer: null };
      w.timer = setTimeout(() => { this.#waiters = this.#waiters.filter((x) => x !== w); resolve(false); }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  // The methods below are called by MarqueeClient only.

  /** Ask for a whole snapshot: 'subscribe_hall' on a new connection, 'get_hall' to resync. */
  _sync(method) {
    if (this.#disposed) return;
    clearTimeout(this.#retryTimer);
    const gen = ++this.#gen;
    this.synced = false;
    if (method === 'subscribe_hall') this.#buffer = []; // a new connection: old updates mean nothing
    this.#inflight = this.#request(method, { screening_id: this.screeningId }).then(
      (snap) => {
        if (gen === this.#gen) this._snapshot(snap, method === 'subscribe_hall' ? 'subscribe' : 'resync', gen);
      },
      (err) => {
        if (gen !== this.#gen || this.#disposed) return;
        if (err.code === 'DISCONNECTED') return; // the next connection subscribes again
        const retrying = TRANSIENT.has(err.code);
        if (retrying) {
          const delay = err.retryAfterS !== null ? err.retryAfterS * 1000 : 2000;
          this.#retryTimer = setTimeout(() => { if (this.#isLive() && gen === this.#gen) this._sync(method); }, delay);
        }
        this.dispatchEvent(new CustomEvent('error', { detail: { error: err, retrying } }));
      },
    );
  }

  /**
   * A whole map: the answer to subscribe_hall/get_hall (with the `gen` of the
   * request) or a hall_snapshot push (gen undefined). Replaces everything.
   */
  _snapshot(snap, reason, gen) {
    if (this.#disposed || !snap || !Array.isArray(snap.seats)) return;
    if (gen === undefined) {
      // A push: the server says "start over from this". Drop answers still on
      // their way, unless this push is older than what we already have.
      if (this.synced && this.version !== null && snap.version < this.version) return;
      this.#gen++;
      clearTimeout(this.#retryTimer);
    }
    this.seats = new Map(snap.seats.map((s) => [s.id, { ...s, mine: s.mine === true }]));
    this.hall = snap.hall || this.hall;
    if (snap.prices && typeof snap.prices === 'object') this.prices = snap.prices;
    this.version = snap.version;
    this.synced = true;
    // Replay what arrived meanwhile; stop at the first hole.
    const buffered = this.#buffer.sort((a, b) => a.version - b.version);
    this.#buffer = [];
    for (let i = 0; i < buffered.length; i++) {
      const u = buffered[i];
      if (u.version <= this.version) continue;
      if (u.version !== this.version + 1 || !this.#apply(u)) {
        this.#gap(buffered.slice(i));
        return;
      }
    }
    this.#emit(reason, null);
  }

  /** A hall_update push. */
  _update(u) {
    if (this.#disposed || typeof u.version !== 'number' || !Array.isArray(u.seats)) return;
    if (!this.synced) { this.#buffer.push(u); return; }
    if (u.version <= this.version) return; // already have it
    if (u.version !== this.version + 1 || !this.#apply(u)) { this.#gap([u]); return; }
    this.#emit('update', u.seats.map((s) => s.id));
  }

  /** Apply one change set; false when it names a seat we do not know (treated as a gap). */
  #apply(u) {
    if (!u.seats.every((s) => this.seats.has(s.id))) return false;
    for (const s of u.seats) {
      const seat = this.seats.get(s.id);
      seat.status = s.status;
      seat.mine = s.mine === true;
    }
    this.version = u.version;
    return true;
  }

  #gap(pending) {
    this.synced = false;
    this.#buffer = pending;
    this.#emit('gap', null);
    this._sync('get_hall');
  }

  /** Connection lost: keep showing the map, but it is no longer live. */
  _stale() {
    clearTimeout(this.#retryTimer);
    this.#gen++;
    this.#buffer = [];
    if (this.synced) { this.synced = false; this.#emit('stale', null); }
  }

  /** Stop for good; returns the last sync request's promise (settled either way). */
  _dispose() {
    this.#disposed = true;
    this.#gen++;
    clearTimeout(this.#retryTimer);
    for (const w of this.#waiters.splice(0)) { clearTimeout(w.timer); w.resolve(false); }
    return this.#inflight.catch(() => {});
  }

  #emit(reason, changed) {
    if (this.synced) {
      this.#waiters = this.#waiters.filter((w) => {
        if (this.version < w.version) return true;
        clearTimeout(w.timer);
        w.resolve(true);
        return false;
      });
    }
    this.dispatchEvent(new CustomEvent('change', { detail: { reason, changed } }));
  }
}
