/**
 * app.js: the demo page. It wires the DOM to MarqueeClient and keeps the
 * page's own state (what is chosen, selected, held). Every protocol detail,
 * eids, reconnects, versions, cookies, lives in marquee-client.js; this file
 * only calls client.request(...), client.watchHall(...), login/logout and
 * listens to events. Seat drawing lives in seatmap.js, wording in format.js.
 *
 * Test hooks: elements carry data-testid attributes (listed in
 * docs/web-client.md); body[data-ready="true"] once the first session frame
 * arrived and the cinemas are loaded.
 */

import { MarqueeClient, PROTOCOL_VERSION } from './marquee-client.js';
import { SeatMap, selectable } from './seatmap.js';
import * as fmt from './format.js';

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const q = (selector) => document.querySelector(selector);

const el = {
  conn: byTestId('connection-status'),
  connText: q('.conn-text'),
  connRetryIn: q('.conn-retry-in'),
  retryNow: byTestId('reconnect-now'),
  user: byTestId('session-user'),
  logout: byTestId('logout-button'),
  messageBar: q('.message-bar'),
  message: byTestId('message'),
  messageClose: q('.message-close'),
  cinema: byTestId('cinema-select'),
  cinemaMeta: q('.cinema-meta'),
  day: byTestId('day-select'),
  tzNote: q('.tz-note'),
  screenings: byTestId('screening-list'),
  seatsTitle: q('#seats-title'),
  screeningTitle: q('.screening-title'),
  screeningMeta: q('.screening-meta'),
  seatMap: byTestId('seat-map'),
  syncNote: q('.sync-note'),
  summary: q('.selection-summary'),
  countdown: byTestId('hold-countdown'),
  hold: byTestId('hold-button'),
  release: byTestId('release-button'),
  book: byTestId('book-button'),
  bestForm: byTestId('best-form'),
  bestCount: byTestId('best-count'),
  bestButton: byTestId('best-button'),
  priceLegend: byTestId('price-legend'),
  companionNote: byTestId('companion-note'),
  accountHeading: q('.account-heading'),
  signedOut: q('.signed-out'),
  nameForm: q('.login-name'),
  username: byTestId('username-input'),
  loginStart: byTestId('login-start'),
  codeStep: q('.login-code'),
  register: q('.register'),
  qr: byTestId('qr-code'),
  secret: byTestId('totp-secret'),
  otpauth: q('.otpauth-link'),
  codeForm: q('.login-verify-form'),
  codeLabel: q('.code-label'),
  code: byTestId('code-input'),
  verify: byTestId('login-verify'),
  back: q('.login-back'),
  signedIn: q('.signed-in'),
  signedInName: q('.signed-in-name'),
  bookings: byTestId('bookings-list'),
  serverId: q('.server-id'),
};

/** Everything the page remembers. The seat map itself is the HallView's. */
const state = {
  /** {id, username} of the connection's user, or null. */
  user: null,
  sessionSeen: false,
  cinemasLoaded: false,
  cinemasLoading: false,
  cinemas: [],
  cinemaById: new Map(),
  /** The chosen cinema and day ("YYYY-MM-DD" in the cinema's zone). */
  cinema: null,
  dayKey: null,
  /** Screenings of the chosen cinema and day, as get_screenings answered. */
  screenings: [],
  /** Every screening seen so far, by id (to describe bookings). */
  screeningInfo: new Map(),
  /** Guards against an older get_screenings answer overwriting a newer one. */
  loadSeq: 0,
  /** The chosen screening and its live HallView. */
  current: null,
  hall: null,
  /** Seat ids the person selected on the current map. */
  selection: new Set(),
  /**
   * "<screening> <seat>" -> {until, version} from hold_seats answers: when our
   * hold ends (ms, server clock) and the hall version that shows it.
   */
  holdUntil: new Map(),
  /** The server runs the box office rules (session `features`): best available, prices per kind, SEAT_RULE. */
  boxOffice: false,
  /** Seats a refused hold would have left alone (SEAT_RULE "orphan"), ringed on the map until the selection changes. */
  alone: [],
  /** seat id -> "C7", from every snapshot seen (bookings and messages name seats). */
  seatNames: new Map(),
  bookings: [],
  /** The booking whose Cancel was pressed once: it asks "Cancel this booking?" before doing it. */
  confirmCancel: null,
  /** An action (hold, release, book, cancel) is waiting for its answer. */
  busy: false,
  authBusy: false,
  /** Between auth_start and auth_verify: {username, status}. */
  auth: null,
  /** Set while we log in or out ourselves, so a changed user is not reported as "signed out". */
  expectSessionChange: false,
};

let client;
let seatMap;

// ---------------------------------------------------------------- start

boot();

async function boot() {
  const config = await loadConfig();
  const params = new URLSearchParams(location.search);
  client = new MarqueeClient({ url: webSocketUrl(config), debug: params.has('debug') });
  // Handy in the browser console: marquee.client.request('get_cinemas').then(console.log)
  window.marquee = { client, state };

  seatMap = new SeatMap(el.seatMap, {
    onToggle: toggleSeat,
    note: (seat) => (state.hall && state.current ? fmt.formatMoney(priceOf([seat.id]), state.current.currency) : ''),
  });
  client.addEventListener('state', renderConnection);
  client.addEventListener('session', onSession);
  client.addEventListener('push', (ev) => {
    if (ev.detail.error) console.warn('Marquee: unsolicited error', ev.detail);
  });

  el.cinema.addEventListener('change', () => chooseCinema(el.cinema.value));
  el.day.addEventListener('change', () => chooseDay(el.day.value));
  el.screenings.addEventListener('click', (ev) => {
    const card = ev.target.closest('[data-screening-id]');
    if (card) chooseScreening(card.dataset.screeningId, { focusMap: true });
  });
  el.hold.addEventListener('click', hold);
  el.release.addEventListener('click', release);
  el.book.addEventListener('click', book);
  el.bestForm.addEventListener('submit', (ev) => { ev.preventDefault(); holdBest(); });
  // 1 to the contract's default seat limit; a lower limit set by a DBA answers HOLD_LIMIT.
  el.bestCount.replaceChildren(...Array.from({ length: 10 }, (_, i) => new Option(fmt.plural(i + 1, 'seat'), String(i + 1))));
  el.bestCount.value = '2';
  el.bookings.addEventListener('click', onBookingsClick);
  el.bookings.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape' || !state.confirmCancel) return;
    const id = state.confirmCancel;
    state.confirmCancel = null;
    renderBookings();
    focusBookingButton(id, 'cancel-booking');
  });
  el.nameForm.addEventListener('submit', (ev) => { ev.preventDefault(); startAuth(); });
  el.codeForm.addEventListener('submit', (ev) => { ev.preventDefault(); verifyCode(); });
  el.username.addEventListener('input', () => {
    if (state.auth && el.username.value.trim().toLowerCase() !== state.auth.username.toLowerCase()) resetAuth();
  });
  el.back.addEventListener('click', () => { resetAuth(); el.username.focus(); });
  el.logout.addEventListener('click', logout);
  el.retryNow.addEventListener('click', () => client.retryNow());
  el.messageClose.addEventListener('click', () => { el.messageBar.hidden = true; });
  // The action bar sticks to the window's bottom on wide screens (style.css):
  // its height is the page's scroll padding, so seats scrolled into view stop above it.
  const actions = document.querySelector('.actions');
  if (actions && 'ResizeObserver' in window) {
    new ResizeObserver(() => {
      document.documentElement.style.setProperty('--actions-h', `${actions.offsetHeight}px`);
    }).observe(actions);
  }

  renderSession();
  renderConnection();
  if (config.protocol !== undefined && config.protocol !== PROTOCOL_VERSION) {
    showMessage(`This page speaks protocol ${PROTOCOL_VERSION} but the server announces ${config.protocol}; some things may not work.`);
  }
  client.connect();
  setInterval(tick, 500);
}

/** GET /config.json tells the WebSocket port; without it, the contract's defaults. */
async function loadConfig() {
  try {
    const res = await fetch('/config.json', { cache: 'no-store' });
    if (res.ok) return await res.json();
  } catch { /* offline file or older server: fall through */ }
  return { ws_port: 3001, protocol: 1 };
}

/**
 * ws(s)://<the page's own host name>:<ws_port>/. The same host name matters:
 * the cookie set by POST /auth/session belongs to that host, and the browser
 * sends it with the upgrade only there (ports do not matter for cookies).
 */
function webSocketUrl(config) {
  if (typeof config.ws_url === 'string' && config.ws_url) return config.ws_url;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.hostname || 'localhost'}:${config.ws_port || 3001}/`;
}

function tick() {
  renderCountdown();
  if (client.state === 'reconnecting' || client.state === 'offline') renderConnection();
}

// ---------------------------------------------------------------- connection and session

const STATE_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

function renderConnection() {
  const s = client.state;
  const retrying = s === 'reconnecting' || s === 'offline';
  el.conn.dataset.state = s;
  if (el.connText.textContent !== STATE_TEXT[s]) el.connText.textContent = STATE_TEXT[s]; // announced (live region)
  // The seconds tick every half second: kept out of the live region (aria-hidden).
  let wait = '';
  if (retrying && client.retryAt) {
    const secs = Math.ceil((client.retryAt - Date.now()) / 1000);
    wait = secs > 0 ? `retry in ${secs} s` : 'retrying…';
  }
  if (el.connRetryIn.textContent !== wait) el.connRetryIn.textContent = wait;
  el.retryNow.hidden = !retrying;
  renderSyncNote();
  renderActions();
}

function onSession(ev) {
  const { session, initial } = ev.detail;
  const before = state.user;
  state.user = session.user || null;
  el.serverId.textContent = session.server || '–';
  state.boxOffice = Array.isArray(session.features) && session.features.includes('box_office');
  el.bestForm.hidden = !state.boxOffice;
  const changed = (before && before.id) !== (state.user && state.user.id);
  if (changed && before && !state.expectSessionChange) {
    showMessage('Your session ended (signed out elsewhere or expired). Sign in again to hold or book seats.');
  }
  if (changed) state.holdUntil.clear();
  renderSession();

  if (initial) {
    if (!state.sessionSeen) state.sessionSeen = true;
    if (!state.cinemasLoaded) loadCinemas();
    else if (state.cinema) loadScreenings({ quiet: true }); // a reconnect: free counts may have moved
    // A registration candidate lives on the connection that asked for it:
    // after a reconnect the old secret is gone, so ask for a new one.
    if (state.auth && state.auth.status === 'candidate' && !state.expectSessionChange) startAuth({ again: true });
  }
  if (state.user && (initial || changed)) loadBookings();
  if (!state.user) {
    state.bookings = [];
    renderBookings();
  }
  renderActions();
}

function renderSession() {
  const u = state.user;
  el.user.textContent = u ? u.username : '';
  el.logout.hidden = !u;
  el.signedOut.hidden = Boolean(u);
  el.signedIn.hidden = !u;
  el.signedInName.textContent = u ? u.username : '';
  el.accountHeading.textContent = u ? 'Your bookings' : 'Sign in or register';
}

function markReady() {
  if (state.sessionSeen && state.cinemasLoaded) document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------- messages

/** Show the one message line; `code` is the error code (data-code), '' for information. */
function showMessage(text, { code = '', kind = 'info' } = {}) {
  el.message.textContent = text;
  el.message.dataset.code = code;
  el.message.dataset.kind = kind;
  el.messageBar.dataset.kind = kind;
  el.messageBar.hidden = false;
}

function showError(err, context) {
  if (!err || !err.code) console.error(err); // a bug, not a server answer
  else console.warn(`Marquee: ${context}`, err.code, err.data);
  showMessage(fmt.describeError(err, context, seatNames), { code: (err && err.code) || 'INTERNAL', kind: 'error' });
}

/** Seat ids as "C7 and C8", from the current map or any map seen before. */
function seatNames(ids) {
  return fmt.seatList(ids, (id) => {
    const seat = state.hall && state.hall.seats.get(id);
    return seat ? fmt.seatShort(seat) : state.seatNames.get(id) || null;
  });
}

// ---------------------------------------------------------------- cinemas, days, screenings

async function loadCinemas() {
  if (state.cinemasLoading || state.cinemasLoaded) return;
  state.cinemasLoading = true;
  try {
    const { cinemas } = await client.request('get_cinemas');
    state.cinemas = cinemas;
    state.cinemaById = new Map(cinemas.map((c) => [c.id, c]));
    el.cinema.replaceChildren(...cinemas.map((c) => new Option(`${c.name} · ${c.city}`, c.id)));
    if (!cinemas.length) el.cinema.append(new Option('No cinemas yet', ''));
    el.cinema.disabled = !cinemas.length;
    state.cinemasLoaded = true;
    markReady();
    const wanted = readHash();
    const first = state.cinemaById.has(wanted.cinema) ? wanted.cinema : cinemas.length ? cinemas[0].id : null;
    if (first) chooseCinema(first, { day: wanted.day, screening: wanted.screening });
    else showMessage('No cinemas yet. A DBA can add one with admin.create_cinema(...).');
  } catch (err) {
    showError(err, 'load');
    // DISCONNECTED: the next session frame calls loadCinemas again.
    if (err.code !== 'DISCONNECTED') setTimeout(() => { if (client.state === 'live') loadCinemas(); }, retryDelay(err));
  } finally {
    state.cinemasLoading = false;
  }
}

function retryDelay(err) {
  return err.retryAfterS !== null && err.retryAfterS !== undefined ? err.retryAfterS * 1000 : 3000;
}

/** The cinema's IANA zone, or UTC when this browser does not know it. */
function zoneOf(cinema) {
  return cinema && fmt.isValidTimeZone(cinema.timezone) ? cinema.timezone : 'UTC';
}

function chooseCinema(id, { day, screening } = {}) {
  const cinema = state.cinemaById.get(id);
  if (!cinema) return;
  state.cinema = cinema;
  el.cinema.value = id;
  const tz = zoneOf(cinema);
  el.cinemaMeta.textContent = [cinema.address, cinema.city].filter(Boolean).join(', ');
  el.tzNote.textContent = `Times are local to the cinema (${tz}).`;
  const days = fmt.upcomingDays(tz, 14);
  el.day.replaceChildren(...days.map((d) => new Option(d.label, d.key)));
  el.day.disabled = false;
  state.dayKey = days.some((d) => d.key === day) ? day : days[0].key;
  el.day.value = state.dayKey;
  loadScreenings({ select: screening });
  saveHash();
}

function chooseDay(key) {
  state.dayKey = key;
  loadScreenings();
  saveHash();
}

/** get_screenings for the chosen day: from its midnight to the next, in the cinema's zone. */
async function loadScreenings({ select = null, quiet = false } = {}) {
  if (!state.cinema || !state.dayKey) return;
  const seq = ++state.loadSeq;
  const { from, to } = fmt.dayRange(state.dayKey, zoneOf(state.cinema));
  el.screenings.setAttribute('aria-busy', 'true');
  if (!quiet) placeholder(el.screenings, 'Loading screenings…');
  try {
    const { screenings } = await client.request('get_screenings', { cinema_id: state.cinema.id, from, to });
    if (seq !== state.loadSeq) return; // the person chose something else meanwhile
    state.screenings = screenings;
    for (const s of screenings) state.screeningInfo.set(s.id, s);
    renderScreenings();
    if (select && screenings.some((s) => s.id === select)) chooseScreening(select);
  } catch (err) {
    if (seq !== state.loadSeq) return;
    showError(err, 'load');
    if (!quiet) placeholder(el.screenings, 'Could not load screenings.');
  } finally {
    if (seq === state.loadSeq) el.screenings.setAttribute('aria-busy', 'false');
  }
}

function placeholder(container, text) {
  const p = document.createElement('p');
  p.className = 'empty';
  p.textContent = text;
  container.replaceChildren(p);
}

function renderScreenings() {
  const tz = zoneOf(state.cinema);
  if (!state.screenings.length) {
    placeholder(el.screenings, 'No screenings on this day. Try another day.');
    return;
  }
  const focused = document.activeElement && document.activeElement.dataset.screeningId;
  const now = client.serverNow();
  el.screenings.replaceChildren(...state.screenings.map((s) => {
    const item = document.createElement('div');
    item.setAttribute('role', 'listitem');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'screening';
    b.dataset.testid = 'screening';
    b.dataset.screeningId = s.id;
    const started = Date.parse(s.starts_at) <= now;
    if (started) b.classList.add('started');
    if (state.current && state.current.id === s.id) b.setAttribute('aria-current', 'true');
    b.append(
      span('s-time', fmt.formatTime(s.starts_at, tz)),
      span('s-film', s.film.title),
      span('s-meta', [started ? 'started' : null, s.hall.name, fmt.ageRating(s.film.age_rating), `${s.film.duration_min} min`,
        priceText(s)].filter(Boolean).join(' · ')),
      span('s-free', freeText(s.seats_free, s.seats_total)),
    );
    item.append(b);
    return item;
  }));
  if (focused) {
    const again = el.screenings.querySelector(`[data-screening-id="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function span(className, text) {
  const s = document.createElement('span');
  s.className = className;
  s.textContent = text;
  return s;
}

/** "€11.50 per seat", or "from €11.50" when the seat kinds cost different amounts. */
function priceText(s) {
  const all = s.prices ? Object.values(s.prices).filter(Number.isFinite) : [];
  const min = all.length ? Math.min(...all) : s.price;
  return all.some((p) => p !== min) ? `from ${fmt.formatMoney(min, s.currency)}` : `${fmt.formatMoney(s.price, s.currency)} per seat`;
}

function freeText(free, total) {
  return free === 0 ? 'sold out' : `${free} of ${total} free`;
}

// ---------------------------------------------------------------- the live seat map

function chooseScreening(id, { focusMap = false } = {}) {
  if (state.current && state.current.id === id && state.hall) return;
  const info = state.screenings.find((s) => s.id === id) || state.screeningInfo.get(id);
  if (!info) return;
  if (state.current) client.unwatchHall(state.current.id);
  state.current = info;
  state.selection.clear();
  state.alone = [];
  el.priceLegend.replaceChildren();
  el.companionNote.hidden = true;
  state.hall = client.watchHall(id);
  state.hall.addEventListener('change', onHallChange);
  state.hall.addEventListener('error', onHallError);
  seatMap.showMessage('Loading seats…');
  renderSyncNote();
  for (const b of el.screenings.querySelectorAll('[data-screening-id]')) {
    if (b.dataset.screeningId === id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  renderScreeningHead();
  renderActions();
  renderCountdown();
  saveHash();
  if (focusMap) el.seatsTitle.focus();
}

function renderScreeningHead() {
  const s = state.current;
  if (!s) return;
  const cinema = state.cinemaById.get(s.cinema_id);
  const tz = zoneOf(cinema);
  el.screeningTitle.textContent = s.film.title;
  el.screeningMeta.textContent = [
    fmt.formatDateTime(s.starts_at, tz), cinema ? cinema.name : null, s.hall.name,
    fmt.ageRating(s.film.age_rating), `${s.film.duration_min} min`, priceText(s),
  ].filter(Boolean).join(' · ');
}

function onHallChange(ev) {
  const hall = ev.target;
  if (hall !== state.hall) return;
  const { changed } = ev.detail; // null: the whole map was replaced
  el.seatMap.dataset.version = hall.version === null ? '' : String(hall.version);
  renderSyncNote();
  if (!hall.synced) { renderActions(); return; } // "stale" or "gap": keep the old map, dimmed, until the snapshot

  if (changed) {
    seatMap.update(changed.map((id) => hall.seats.get(id)), state.selection);
  } else {
    for (const s of hall.seats.values()) state.seatNames.set(s.id, fmt.seatShort(s));
    for (const id of state.selection) if (!hall.seats.has(id)) state.selection.delete(id);
    seatMap.render(hall.seats.values(), state.selection);
    seatMap.markAlone(state.alone);
    renderKinds(hall);
    // Bookings of this screening can now name their seats ("C5 and C6" instead of "2 seats").
    if (state.bookings.some((b) => b.screening_id === hall.screeningId)) renderBookings();
  }
  forgetEndedHolds(hall);
  updateFreeCount(hall);
  renderActions();
  renderCountdown();
}

/** Dim the map and say why while it is not in sync with the server. */
function renderSyncNote() {
  const hall = state.hall;
  const behind = Boolean(hall) && !hall.synced && hall.version !== null;
  el.seatMap.classList.toggle('stale', behind);
  el.syncNote.hidden = !behind;
  el.syncNote.textContent = client.state === 'live' ? 'Catching up with the server…' : 'Not connected: the map may be out of date.';
}

function onHallError(ev) {
  if (ev.target !== state.hall) return;
  const { error, retrying } = ev.detail;
  showError(error, 'hall');
  if (!retrying && state.hall.version === null) seatMap.showMessage(fmt.describeError(error, 'hall'));
}

/** Seats of ours that are no longer held by us: forget their timers; say so when the hold simply ran out. */
function forgetEndedHolds(hall) {
  const prefix = `${hall.screeningId} `;
  const expired = [];
  for (const [key, { until, version }] of state.holdUntil) {
    if (!key.startsWith(prefix) || hall.version < version) continue; // our hold is not on the map yet
    const id = key.slice(prefix.length);
    const seat = hall.seats.get(id);
    if (seat && seat.mine && seat.status === 'held') continue;
    state.holdUntil.delete(key);
    if (until <= client.serverNow() + 1000) expired.push(id);
  }
  if (expired.length) showMessage(`Your hold on ${seatNames(expired)} ran out; the seats are free for everyone again.`);
}

function updateFreeCount(hall) {
  if (!state.current) return;
  let free = 0;
  for (const s of hall.seats.values()) if (s.status === 'free') free++;
  state.current.seats_free = free;
  const card = el.screenings.querySelector(`[data-screening-id="${CSS.escape(hall.screeningId)}"] .s-free`);
  if (card) card.textContent = freeText(free, hall.seats.size);
}

function toggleSeat(id) {
  const hall = state.hall;
  const seat = hall && hall.seats.get(id);
  if (!seat) return;
  // A selected seat can always be unselected, even after someone else took it.
  if (state.selection.has(id)) state.selection.delete(id);
  else if (selectable(seat)) state.selection.add(id);
  else return;
  seatMap.update([seat], state.selection);
  clearAlone();
  renderActions();
}

function clearAlone() {
  if (!state.alone.length) return;
  state.alone = [];
  seatMap.markAlone([]);
}

/**
 * The legend of seat kinds this hall has, each with its price for this
 * screening; the companion note only where the hall has companion seats.
 */
function renderKinds(hall) {
  const present = new Set([...hall.seats.values()].map((s) => s.kind));
  const s = state.current;
  el.priceLegend.replaceChildren(...fmt.KINDS.filter(([kind]) => present.has(kind)).map(([kind, name]) => {
    const li = document.createElement('li');
    li.dataset.kind = kind;
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.dataset.status = 'free';
    swatch.dataset.kind = kind;
    li.append(swatch, name);
    if (s) li.append(' ', span('price', fmt.formatMoney(fmt.seatPrice(kind, hall.prices, s.price), s.currency)));
    return li;
  }));
  el.companionNote.hidden = !present.has('companion');
}

/** What seats cost on this screening, each at its kind's price. */
function priceOf(ids) {
  const hall = state.hall;
  const s = state.current;
  let total = 0;
  for (const id of ids) {
    const seat = hall.seats.get(id);
    total += fmt.seatPrice(seat ? seat.kind : 'standard', hall.prices, s.price);
  }
  return total;
}

/** Seats I hold on the current map. */
function myHeld() {
  if (!state.hall) return [];
  return [...state.hall.seats.values()].filter((s) => s.mine && s.status === 'held').map((s) => s.id);
}

/**
 * What each button would do now. Hold: the selected seats (or, with nothing
 * selected, renew my holds). Release and book: my selected holds, or all my
 * holds when none of them is selected.
 */
function plan() {
  const hall = state.hall;
  const selected = [...state.selection].filter((id) => hall.seats.has(id));
  const mineHeld = myHeld();
  const selectedHeld = selected.filter((id) => mineHeld.includes(id));
  return {
    selected,
    mineHeld,
    renew: selected.length === 0,
    toHold: selected.length ? selected : mineHeld,
    toRelease: selectedHeld.length ? selectedHeld : mineHeld,
    toBook: selectedHeld.length ? selectedHeld : mineHeld,
    taken: selected.filter((id) => !selectable(hall.seats.get(id))),
  };
}

function renderActions() {
  const hall = state.hall;
  if (!hall || hall.version === null) {
    for (const b of [el.hold, el.release, el.book, el.bestButton]) b.disabled = true;
    el.summary.textContent = hall ? '' : 'Choose a screening to see its seats.';
    return;
  }
  const p = plan();
  const ready = client.state === 'live' && hall.synced && !state.busy;
  el.hold.disabled = !ready || !p.toHold.length;
  el.release.disabled = !ready || !p.toRelease.length;
  el.book.disabled = !ready || !p.toBook.length;
  el.bestButton.disabled = !ready;
  el.hold.textContent = p.renew ? (p.mineHeld.length ? 'Renew hold' : 'Hold seats') : `Hold ${fmt.plural(p.selected.length, 'seat')}`;
  el.release.textContent = p.toRelease.length ? `Release ${fmt.plural(p.toRelease.length, 'seat')}` : 'Release';
  const price = state.current ? fmt.formatMoney(priceOf(p.toBook), state.current.currency) : '';
  el.book.textContent = p.toBook.length ? `Book ${fmt.plural(p.toBook.length, 'seat')} · ${price}` : 'Book';

  const parts = [];
  if (p.selected.length) parts.push(`Selected: ${seatNames(p.selected)} · ${fmt.formatMoney(priceOf(p.selected), state.current.currency)}.`);
  if (p.taken.length) parts.push(`${seatNames(p.taken)} ${p.taken.length === 1 ? 'was' : 'were'} just taken by someone else.`);
  if (p.mineHeld.length) parts.push(`You hold ${seatNames(p.mineHeld)} · ${fmt.formatMoney(priceOf(p.mineHeld), state.current.currency)}.`);
  else if (!p.selected.length) parts.push(state.user ? 'Select free seats, then hold them.' : 'Select free seats, sign in, then hold them.');
  const booked = [...hall.seats.values()].filter((s) => s.mine && s.status === 'booked').map((s) => s.id);
  if (booked.length) parts.push(`You booked ${seatNames(booked)}.`);
  el.summary.textContent = parts.join(' ');
}

function renderCountdown() {
  const held = myHeld();
  const c = el.countdown;
  if (!held.length) {
    c.hidden = true;
    c.textContent = '';
    delete c.dataset.expiresAt;
    delete c.dataset.secondsLeft;
    return;
  }
  c.hidden = false;
  const ends = held.map((id) => state.holdUntil.get(`${state.hall.screeningId} ${id}`)).filter(Boolean).map((h) => h.until);
  if (!ends.length) {
    // Held before this page loaded: the snapshot does not say until when.
    c.textContent = 'Seats held. Renew the hold to see the time left.';
    c.classList.remove('urgent');
    delete c.dataset.expiresAt;
    delete c.dataset.secondsLeft;
    return;
  }
  const until = Math.min(...ends);
  const left = (until - client.serverNow()) / 1000;
  c.dataset.expiresAt = new Date(until).toISOString();
  c.dataset.secondsLeft = String(Math.max(0, Math.ceil(left)));
  c.textContent = left > 0 ? `Hold ends in ${fmt.formatCountdown(left)}` : 'Hold ran out; releasing the seats…';
  c.classList.toggle('urgent', left < 60);
}

// ---------------------------------------------------------------- actions

/** Run one action at a time; its failure becomes the message line. */
async function runAction(context, fn) {
  if (state.busy) return;
  state.busy = true;
  clearAlone();
  renderActions();
  try {
    await fn();
  } catch (err) {
    onActionError(err, context);
  } finally {
    state.busy = false;
    renderActions();
    renderCountdown();
  }
}

function onActionError(err, context) {
  showError(err, context);
  if (err.code === 'SEAT_UNAVAILABLE' && state.hall) {
    // The server names the seats that were not available: drop them from the selection.
    for (const id of err.seatIds) state.selection.delete(id);
    seatMap.update(err.seatIds.map((id) => state.hall.seats.get(id)).filter(Boolean), state.selection);
    seatMap.flash(err.seatIds);
  }
  if (err.code === 'SEAT_RULE' && state.hall) {
    // Show on the map which seats the rule is about: the seat that would be
    // left alone (ringed until the selection changes), or the companion seats.
    const ids = err.seatIds.filter((id) => state.hall.seats.has(id));
    if (err.rule === 'orphan') {
      state.alone = ids;
      seatMap.markAlone(ids);
    }
    if (err.rule === 'companion') el.companionNote.hidden = false;
    seatMap.flash(ids);
  }
  if (err.code === 'UNAUTHORIZED' && !state.user) el.username.focus();
}

/** After our own change, wait until the map shows it (the answer's `version`), then repaint the selection. */
async function settle(hall, version, ids) {
  for (const id of ids) state.selection.delete(id);
  await hall.waitForVersion(version);
  if (hall !== state.hall) return;
  seatMap.update(ids.map((id) => hall.seats.get(id)).filter(Boolean), state.selection);
}

function hold() {
  runAction('hold', async () => {
    const hall = state.hall;
    const p = plan();
    const res = await client.request('hold_seats', { screening_id: hall.screeningId, seat_ids: p.toHold });
    const until = Date.parse(res.expires_at);
    for (const id of res.seat_ids) state.holdUntil.set(`${hall.screeningId} ${id}`, { until, version: res.version });
    await settle(hall, res.version, res.seat_ids);
    const tz = zoneOf(state.cinemaById.get(state.current.cinema_id));
    const time = fmt.formatTime(res.expires_at, tz);
    showMessage(p.renew
      ? `Hold renewed until ${time}.`
      : `Holding ${seatNames(res.seat_ids)} for you until ${time}. Book before the timer runs out.`);
  });
}

/** hold_best_available: the server picks the best block of N seats side by side and holds it. */
function holdBest() {
  runAction('best', async () => {
    const hall = state.hall;
    const count = Number(el.bestCount.value);
    const res = await client.request('hold_best_available', { screening_id: hall.screeningId, count });
    const until = Date.parse(res.expires_at);
    for (const id of res.seat_ids) state.holdUntil.set(`${hall.screeningId} ${id}`, { until, version: res.version });
    await settle(hall, res.version, res.seat_ids);
    seatMap.flash(res.seat_ids);
    const tz = zoneOf(state.cinemaById.get(state.current.cinema_id));
    showMessage(`Found ${fmt.plural(res.seat_ids.length, 'seat')} together: holding ${seatNames(res.seat_ids)} `
      + `(${fmt.formatMoney(priceOf(res.seat_ids), state.current.currency)}) for you until ${fmt.formatTime(res.expires_at, tz)}. Book before the timer runs out.`);
  });
}

function release() {
  runAction('release', async () => {
    const hall = state.hall;
    const ids = plan().toRelease;
    const res = await client.request('release_seats', { screening_id: hall.screeningId, seat_ids: ids });
    for (const id of res.seat_ids) state.holdUntil.delete(`${hall.screeningId} ${id}`);
    await settle(hall, res.version, ids);
    showMessage(res.seat_ids.length ? `Released ${seatNames(res.seat_ids)}.` : 'Nothing to release.');
  });
}

function book() {
  runAction('book', async () => {
    const hall = state.hall;
    const ids = plan().toBook;
    const res = await client.request('book_seats', { screening_id: hall.screeningId, seat_ids: ids });
    const { booking } = res;
    for (const id of booking.seat_ids) state.holdUntil.delete(`${hall.screeningId} ${id}`);
    state.bookings = [booking, ...state.bookings.filter((b) => b.id !== booking.id)];
    renderBookings();
    await settle(hall, res.version, booking.seat_ids);
    showMessage(`Booked ${seatNames(booking.seat_ids)} · ${fmt.formatMoney(booking.total, booking.currency)}. Enjoy the film!`);
  });
}

// ---------------------------------------------------------------- bookings

async function loadBookings() {
  try {
    const { bookings } = await client.request('get_bookings');
    state.bookings = bookings;
    renderBookings();
    await describeBookings();
  } catch (err) {
    if (err.code !== 'DISCONNECTED') showError(err, 'load');
  }
}

/** Bookings name only a screening id: fetch the screenings we have not seen, once. */
async function describeBookings() {
  const unknown = state.bookings.filter((b) => !state.screeningInfo.has(b.screening_id));
  if (!unknown.length) return;
  const day = 24 * 3600 * 1000;
  const from = Math.min(...unknown.map((b) => Date.parse(b.created_at)));
  const to = Date.now() + 60 * day;
  try {
    // The server answers at most 31 days per request: ask window by window.
    for (let t = from; t < to; t += 31 * day) {
      const { screenings } = await client.request('get_screenings', {
        from: new Date(t).toISOString(),
        to: new Date(Math.min(t + 31 * day, to)).toISOString(),
      });
      for (const s of screenings) state.screeningInfo.set(s.id, s);
    }
    renderBookings();
  } catch { /* the list still works without titles */ }
}

function renderBookings() {
  if (!state.bookings.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'No bookings yet. Hold seats, then book them.';
    el.bookings.replaceChildren(li);
    return;
  }
  el.bookings.replaceChildren(...state.bookings.map((b) => {
    const info = state.screeningInfo.get(b.screening_id);
    const tz = info ? zoneOf(state.cinemaById.get(info.cinema_id)) : 'UTC';
    const li = document.createElement('li');
    li.className = 'booking';
    li.dataset.testid = 'booking';
    li.dataset.bookingId = b.id;
    li.dataset.status = b.status;
    const title = document.createElement('button');
    title.type = 'button';
    title.className = 'link booking-open';
    title.dataset.screeningId = b.screening_id;
    title.textContent = info ? info.film.title : 'Screening';
    const seats = b.seat_ids.every((id) => state.seatNames.has(id)) ? seatNames(b.seat_ids) : fmt.plural(b.seat_ids.length, 'seat');
    li.append(
      title,
      span('b-meta', [info ? fmt.formatDateTime(info.starts_at, tz) : null, info ? info.hall.name : null, seats].filter(Boolean).join(' · ')),
      span('b-total', `${fmt.formatMoney(b.total, b.currency)}`),
      span(`badge ${b.status}`, b.status),
    );
    if (b.status === 'confirmed') {
      const cancel = document.createElement('button');
      cancel.type = 'button';
      cancel.className = 'btn ghost small';
      cancel.dataset.testid = 'cancel-booking';
      cancel.dataset.bookingId = b.id;
      cancel.textContent = 'Cancel';
      cancel.setAttribute('aria-label', `Cancel booking: ${title.textContent}, ${seats}`);
      cancel.setAttribute('aria-expanded', String(state.confirmCancel === b.id));
      li.append(cancel);
      // A cancellation gives the seats away to anybody: one slip of the finger must not do it.
      if (state.confirmCancel === b.id) {
        const ask = document.createElement('div');
        ask.className = 'cancel-confirm';
        ask.dataset.testid = 'cancel-confirm';
        ask.setAttribute('role', 'group');
        ask.setAttribute('aria-label', 'Confirm the cancellation');
        const yes = document.createElement('button');
        yes.type = 'button';
        yes.className = 'btn danger small';
        yes.dataset.testid = 'confirm-cancel';
        yes.dataset.bookingId = b.id;
        yes.textContent = 'Yes, cancel it';
        const no = document.createElement('button');
        no.type = 'button';
        no.className = 'btn ghost small';
        no.dataset.testid = 'keep-booking';
        no.dataset.bookingId = b.id;
        no.textContent = 'Keep it';
        ask.append(span('cancel-question', `Cancel ${seats}? The seats go back on sale.`), yes, no);
        li.append(ask);
      }
    }
    return li;
  }));
}

function onBookingsClick(ev) {
  const cancel = ev.target.closest('[data-testid="cancel-booking"]');
  if (cancel) {
    const id = cancel.dataset.bookingId;
    state.confirmCancel = state.confirmCancel === id ? null : id;
    renderBookings();
    focusBookingButton(id, state.confirmCancel ? 'confirm-cancel' : 'cancel-booking');
    return;
  }
  const keep = ev.target.closest('[data-testid="keep-booking"]');
  if (keep) {
    state.confirmCancel = null;
    renderBookings();
    focusBookingButton(keep.dataset.bookingId, 'cancel-booking');
    return;
  }
  const confirm = ev.target.closest('[data-testid="confirm-cancel"]');
  if (confirm) {
    state.confirmCancel = null;
    confirm.disabled = true;
    cancelBooking(confirm.dataset.bookingId);
    return;
  }
  const open = ev.target.closest('.booking-open');
  if (open) openScreening(open.dataset.screeningId);
}

/** Keeps the keyboard focus on the booking's buttons across a re-render. */
function focusBookingButton(bookingId, testid) {
  const b = el.bookings.querySelector(`[data-testid="${testid}"][data-booking-id="${CSS.escape(bookingId)}"]`);
  if (b) b.focus();
}

function cancelBooking(bookingId) {
  runAction('cancel', async () => {
    const { booking } = await client.request('cancel_booking', { booking_id: bookingId });
    state.bookings = state.bookings.map((b) => (b.id === booking.id ? booking : b));
    renderBookings();
    showMessage('Booking cancelled; its seats are free again.');
  });
}

/** Show a booking's screening: switch cinema and day when needed. */
function openScreening(id) {
  const info = state.screeningInfo.get(id);
  if (!info) return;
  const cinema = state.cinemaById.get(info.cinema_id);
  const day = fmt.dayKey(Date.parse(info.starts_at), zoneOf(cinema));
  if (cinema && (state.cinema !== cinema || state.dayKey !== day)) chooseCinema(cinema.id, { day, screening: id });
  chooseScreening(id, { focusMap: true });
}

// ---------------------------------------------------------------- sign in, register, sign out

async function runAuth(context, fn) {
  if (state.authBusy) return;
  state.authBusy = true;
  el.loginStart.disabled = el.verify.disabled = el.logout.disabled = true;
  try {
    await fn();
  } catch (err) {
    showError(err, context);
    if (err.code === 'USERNAME_TAKEN') { resetAuth(); el.username.select(); }
    if (err.code === 'INVALID_CODE') { el.code.value = ''; el.code.focus(); }
  } finally {
    state.authBusy = false;
    el.loginStart.disabled = el.verify.disabled = el.logout.disabled = false;
  }
}

/** auth_start: "user" asks for the code; "candidate" shows the QR code and the secret first. */
function startAuth({ again = false } = {}) {
  runAuth('auth_start', async () => {
    const username = again ? state.auth.username : el.username.value.trim();
    const res = await client.startAuth(username);
    state.auth = { username, status: res.status };
    const candidate = res.status === 'candidate';
    el.register.hidden = !candidate;
    if (candidate) {
      el.qr.src = res.qr_code;
      el.secret.textContent = res.secret;
      // Only an otpauth: link may become a link (never javascript: or the like).
      const linkOk = /^otpauth:\/\//.test(res.otpauth_url || '');
      el.otpauth.href = linkOk ? res.otpauth_url : '#';
      el.otpauth.parentElement.hidden = !linkOk;
    } else {
      el.qr.removeAttribute('src');
      el.secret.textContent = '';
    }
    el.codeLabel.textContent = candidate ? '6-digit code shown in the app' : '6-digit code from your authenticator app';
    el.verify.textContent = candidate ? 'Create account' : 'Sign in';
    el.codeStep.hidden = false;
    el.code.value = '';
    el.code.focus();
    if (again) showMessage('The connection was renewed, so registration starts over: add this new key to your app.');
    else if (candidate) showMessage(`“${username}” is free. Add the key to your authenticator app, then enter its 6-digit code.`);
    else showMessage(`Welcome back. Enter the 6-digit code from your authenticator app.`);
  });
}

/** auth_verify, then the cookie and a new connection (client.login does all three). */
function verifyCode() {
  runAuth('auth_verify', async () => {
    if (!state.auth) return; // the code form is shown only after auth_start
    const code = el.code.value.replace(/\s+/g, '');
    state.expectSessionChange = true;
    let result;
    try {
      result = await client.login(state.auth.username, code);
    } finally {
      state.expectSessionChange = false;
    }
    resetAuth();
    el.username.value = '';
    showMessage(`Signed in as ${result.user.username}.`);
  });
}

function resetAuth() {
  state.auth = null;
  el.codeStep.hidden = true;
  el.register.hidden = true;
  el.qr.removeAttribute('src');
  el.secret.textContent = '';
  el.code.value = '';
}

function logout() {
  runAuth('logout', async () => {
    state.expectSessionChange = true;
    try {
      await client.logout();
    } finally {
      state.expectSessionChange = false;
    }
    state.holdUntil.clear();
    showMessage('Signed out.');
  });
}

// ---------------------------------------------------------------- address bar

/** #cinema=…&day=…&screening=… so a reload or a shared link shows the same screening. */
function saveHash() {
  const p = new URLSearchParams();
  if (state.cinema) p.set('cinema', state.cinema.id);
  if (state.dayKey) p.set('day', state.dayKey);
  if (state.current) p.set('screening', state.current.id);
  history.replaceState(null, '', `#${p}`);
}

function readHash() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}
