/**
 * format.js: pure helpers for the demo page: days and times in a cinema's
 * time zone, money in minor units, seat labels, and the human message for
 * every error code of the contract. No DOM, no protocol: unit-testable in Node.
 */

// ------------------------------------------------------------------ time zones

const wallFormatters = new Map();

/** A cached formatter that reads the wall clock of `timeZone`. */
function wallFormatter(timeZone) {
  let f = wallFormatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23',
      year: 'numeric', month: 'numeric', day: 'numeric',
      hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
    wallFormatters.set(timeZone, f);
  }
  return f;
}

/** The wall clock in `timeZone` at instant `ms`: {year, month (1-12), day, hour, minute, second}. */
export function wallClock(ms, timeZone) {
  const out = {};
  for (const part of wallFormatter(timeZone).formatToParts(ms)) {
    if (part.type !== 'literal') out[part.type] = Number(part.value);
  }
  return out;
}

/** How far `timeZone` is ahead of UTC at instant `ms`, in ms. */
function offsetAt(ms, timeZone) {
  const w = wallClock(ms, timeZone);
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - Math.floor(ms / 1000) * 1000;
}

/** True when `timeZone` is a zone this browser knows. */
export function isValidTimeZone(timeZone) {
  try {
    wallFormatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

const pad = (n) => String(n).padStart(2, '0');

/** "YYYY-MM-DD" of the calendar day that contains instant `ms` in `timeZone`. */
export function dayKey(ms, timeZone) {
  const w = wallClock(ms, timeZone);
  return `${w.year}-${pad(w.month)}-${pad(w.day)}`;
}

function parseDayKey(key) {
  const [y, m, d] = key.split('-').map(Number);
  return { y, m, d };
}

/** The key of the day `n` days after `key` (calendar arithmetic, no zone involved). */
export function addDays(key, n) {
  const { y, m, d } = parseDayKey(key);
  const t = new Date(Date.UTC(y, m - 1, d + n));
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
}

/**
 * The instant (ms) when day `key` starts in `timeZone`. Uses the offset at a
 * first guess, then corrects once for a DST change in between. When midnight
 * does not exist (a few zones spring forward at 00:00) the day starts at the
 * first wall time that does.
 */
export function startOfDay(key, timeZone) {
  const { y, m, d } = parseDayKey(key);
  const guess = Date.UTC(y, m - 1, d);
  let t = guess - offsetAt(guess, timeZone);
  const second = guess - offsetAt(t, timeZone);
  if (second !== t) t = second;
  if (dayKey(t, timeZone) !== key) t += 3600 * 1000; // landed in the previous day: a gap at midnight
  return t;
}

/** get_screenings bounds for a whole day in the cinema's zone: {from, to} as RFC 3339 UTC. */
export function dayRange(key, timeZone) {
  return {
    from: new Date(startOfDay(key, timeZone)).toISOString(),
    to: new Date(startOfDay(addDays(key, 1), timeZone)).toISOString(),
  };
}

/** The next `count` days in `timeZone`, today first: [{key, label}]. */
export function upcomingDays(timeZone, count, nowMs = Date.now()) {
  const today = dayKey(nowMs, timeZone);
  const weekday = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', timeZone: 'UTC' });
  const days = [];
  for (let i = 0; i < count; i++) {
    const key = addDays(today, i);
    const { y, m, d } = parseDayKey(key);
    const date = weekday.format(Date.UTC(y, m - 1, d));
    const label = i === 0 ? `Today (${date})` : i === 1 ? `Tomorrow (${date})` : date;
    days.push({ key, label });
  }
  return days;
}

const timeFormatters = new Map();
function cachedFormat(timeZone, kind) {
  const id = `${timeZone}|${kind}`;
  let f = timeFormatters.get(id);
  if (!f) {
    // hour 'numeric': "1:00 PM" in 12-hour locales (not "01:00 PM"), "13:00" in 24-hour ones.
    const opts = kind === 'time'
      ? { hour: 'numeric', minute: '2-digit' }
      : { weekday: 'short', day: 'numeric', month: 'short', hour: 'numeric', minute: '2-digit' };
    f = new Intl.DateTimeFormat(undefined, { ...opts, timeZone });
    timeFormatters.set(id, f);
  }
  return f;
}

/**
 * A film's age rating for people: a bare number is a minimum age ("12" ->
 * "12+", "0" -> "All ages"); anything else ("PG-13", "FSK 12") as it is.
 */
export function ageRating(rating) {
  const r = String(rating ?? '').trim();
  if (!/^\d+$/.test(r)) return r;
  return Number(r) === 0 ? 'All ages' : `${Number(r)}+`;
}

/** "19:30" (in the reader's locale style) for an RFC 3339 instant, in `timeZone`. */
export function formatTime(iso, timeZone) {
  return cachedFormat(timeZone, 'time').format(new Date(iso));
}

/** "Fri 29 Nov, 19:30" for an RFC 3339 instant, in `timeZone`. */
export function formatDateTime(iso, timeZone) {
  return cachedFormat(timeZone, 'datetime').format(new Date(iso));
}

/** "1:05" or "12:00" for a number of seconds (countdowns). */
export function formatCountdown(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${pad(s % 60)}`;
}

// ------------------------------------------------------------------ money

/** An amount in minor units (cents) with its ISO 4217 currency, e.g. "€12.50". */
export function formatMoney(minor, currency) {
  try {
    const f = new Intl.NumberFormat(undefined, { style: 'currency', currency });
    const digits = f.resolvedOptions().maximumFractionDigits;
    return f.format(minor / 10 ** digits);
  } catch {
    return `${minor} ${currency}`; // unknown currency code: show it raw
  }
}

// ------------------------------------------------------------------ seats

const KIND_TEXT = { standard: 'standard', vip: 'VIP', wheelchair: 'wheelchair space', companion: 'companion seat' };

/** Seat kinds in the order the legend lists them, with the names a cinema-goer reads. */
export const KINDS = Object.freeze([
  ['standard', 'Standard'], ['vip', 'VIP'], ['wheelchair', 'Wheelchair space'], ['companion', 'Companion seat'],
]);

/**
 * The price of one seat: its kind's price from the screening's `prices`
 * (box office), else the screening's single `price` (an older server).
 */
export function seatPrice(kind, prices, price) {
  return prices && Number.isFinite(prices[kind]) ? prices[kind] : price;
}

/** "C7" */
export function seatShort(seat) {
  return `${seat.row}${seat.number}`;
}

/** Status words for screen readers and tooltips: "free", "held by you", … */
export function statusText(seat) {
  if (seat.mine && seat.status === 'held') return 'held by you';
  if (seat.mine && seat.status === 'booked') return 'booked by you';
  return seat.status;
}

/** "Row C seat 7, VIP, free": the seat button's accessible name. */
export function seatLabel(seat) {
  return `Row ${seat.row} seat ${seat.number}, ${KIND_TEXT[seat.kind] || seat.kind}, ${statusText(seat)}`;
}

/** "C7, C8 and D1" for seat ids, given `nameOf(id)` -> "C7" or null (unknown ids are counted). */
export function seatList(ids, nameOf) {
  const known = ids.map(nameOf).filter(Boolean);
  const unknown = ids.length - known.length;
  if (unknown) known.push(unknown === 1 ? 'one more seat' : `${unknown} more seats`);
  if (known.length <= 1) return known.join('');
  return `${known.slice(0, -1).join(', ')} and ${known[known.length - 1]}`;
}

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// ------------------------------------------------------------------ errors

/**
 * The message a person reads for a failed request. `err` is a MarqueeError
 * (code, data); `context` names what the person was doing ('auth_start',
 * 'auth_verify', 'hold', 'best', 'release', 'book', 'cancel', 'hall', 'load', 'logout')
 * so the same code can say something specific; `seatNames(ids)` turns seat
 * ids into "C7 and C8". Every contract code has a sentence here.
 */
export function describeError(err, context = '', seatNames = (ids) => plural(ids.length, 'seat')) {
  const code = err && err.code ? err.code : 'INTERNAL';
  const data = (err && err.data) || {};
  switch (code) {
    case 'BAD_REQUEST':
      if (context === 'auth_start') return 'Usernames are 3 to 32 characters: letters, digits, "_", "." or "-".';
      if (context === 'auth_verify') return 'Enter the 6-digit code from your authenticator app (digits only).';
      return 'The server could not accept that request. Reload the page and try again.';
    case 'UNKNOWN_METHOD':
      return 'The server does not know this action; it may run an older version than this page.';
    case 'UNAUTHORIZED':
      // auth_verify itself never answers UNAUTHORIZED: this is POST /auth/session refusing the token.
      if (context === 'auth_verify') return 'Sign-in could not be completed: the server refused the token. Please try again.';
      return 'Please sign in first (see "Sign in or register").';
    case 'FORBIDDEN':
      // From POST /auth/session or /auth/logout: the page's origin is not in ALLOWED_ORIGINS.
      if (context === 'auth_verify' || context === 'logout') {
        return 'The server does not accept sign-ins from this page\'s address. Open the page from the server\'s own address.';
      }
      return 'You are not allowed to do that.';
    case 'NOT_FOUND':
      if (context === 'cancel') return 'That booking was not found among yours.';
      if (context === 'hall' || context === 'hold' || context === 'best' || context === 'book' || context === 'release') {
        return 'This screening or one of its seats no longer exists. Pick another screening.';
      }
      return 'That no longer exists; it may have been removed.';
    case 'RATE_LIMITED': {
      const s = Number.isFinite(data.retry_after_s) ? data.retry_after_s : null;
      const wait = s === null ? 'in a little while' : `in ${plural(s, 'second')}`;
      if (context === 'auth_verify') return `Too many wrong codes for this name. Try again ${wait}.`;
      return `Slow down: too many requests. Try again ${wait}.`;
    }
    case 'INVALID_CODE':
      return 'That code is not valid (wrong, expired or already used). Wait for the next code in your app and try again.';
    case 'USERNAME_TAKEN':
      return 'Someone else just registered that name. Please choose another username.';
    case 'SEAT_UNAVAILABLE': {
      const ids = Array.isArray(data.seat_ids) ? data.seat_ids : [];
      // hold_best_available names no seats: there was simply no block left.
      if (!ids.length && context === 'best') return 'There are not that many free seats side by side any more. Try fewer seats, or pick seats yourself.';
      if (!ids.length) return 'Some of those seats were just taken. Pick others.';
      const names = seatNames(ids);
      return `Sorry, ${names} ${ids.length === 1 ? 'is' : 'are'} no longer available. Pick other seats.`;
    }
    case 'SEAT_RULE': {
      const ids = Array.isArray(data.seat_ids) ? data.seat_ids : [];
      const names = ids.length ? seatNames(ids) : null;
      if (data.rule === 'companion') {
        return `${names ? `${names} ${ids.length === 1 ? 'is a companion seat' : 'are companion seats'}` : 'Companion seats are'} `
          + 'for someone accompanying a wheelchair user. Hold or book the wheelchair space next to it first, or together with it.';
      }
      if (data.rule === 'orphan') {
        const alone = names ? `${names} would be left on ${ids.length === 1 ? 'its' : 'their'} own` : 'a single seat would be left on its own';
        return `Please don't leave a single seat empty: ${alone}, and people coming in pairs or groups could not use it. `
          + `Take ${names || 'that seat'} as well, or move your selection so that no seat is left alone.`;
      }
      return 'Those seats cannot be held together under the cinema\'s seating rules. Pick other seats.';
    }
    case 'HOLD_LIMIT': {
      // The server's sentence names the limit in force ("at most 10 seats for one
      // screening", or the limit over all screenings): a DBA can change either.
      const said = typeof data.message === 'string' ? data.message.trim() : '';
      const limit = /\d+/.exec(said);
      if (limit) return `${said.charAt(0).toUpperCase()}${said.slice(1)}${/[.!]$/.test(said) ? '' : '.'} Choose fewer seats.`;
      return 'You have reached the limit of seats one person may hold or book for this screening.';
    }
    case 'HOLD_EXPIRED':
      return 'Your hold ran out before booking. Select the seats and hold them again.';
    case 'SCREENING_CLOSED':
      return 'This screening has already started; its seats and bookings can no longer be changed.';
    case 'LIMIT':
      return 'Too many seat maps open on this connection. Reload the page.';
    case 'UNAVAILABLE':
      return 'The booking system is briefly unavailable. Please try again in a moment.';
    case 'INTERNAL':
      return 'Something went wrong on our side. Please try again.';
    case 'TIMEOUT':
      return 'The server did not answer in time. Check the connection and try again.';
    case 'DISCONNECTED':
      return 'The connection dropped before the server answered. It reconnects by itself; check the seat map, then try again.';
    case 'SESSION_NOT_ESTABLISHED':
      return 'Signed in, but the live connection did not receive the session cookie. Open the page via the same host name as the server (localhost vs 127.0.0.1) and allow cookies.';
    case 'HTTP':
      return 'The sign-in server could not be reached. Please try again.';
    default:
      return (data && typeof data.message === 'string' && data.message) || `Error ${code}.`;
  }
}
