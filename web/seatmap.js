/**
 * seatmap.js: draws a hall's seats as a grid of buttons and keeps them
 * current. Knows seats (x, y, row, number, kind, status, mine) and the
 * page's selection; knows nothing of the protocol.
 *
 * Layout: x and y are grid coordinates. Every seat sits in the grid cell
 * (x, y); a column with no seat is an aisle, a row with no seat a cross
 * aisle. Row letters stand at both ends of each row.
 *
 * Keyboard: one seat is in the tab order (roving tabindex); arrow keys move
 * between seats, skipping aisles; Home/End go to the ends of the row; Enter
 * and Space press the seat (native button behaviour).
 */

import { seatLabel, seatShort } from './format.js';

/** Seats a person may select: free ones (to hold) and their own holds (to release or book). */
export function selectable(seat) {
  return seat.status === 'free' || (seat.status === 'held' && seat.mine);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A small wheelchair pictogram (drawn, so no font is needed). */
function wheelchairIcon() {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'seat-icon');
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('d', 'M12 2.5a2 2 0 1 1 0 4 2 2 0 0 1 0-4zM10.5 8h2.5v5h4.5l2.5 6-1.8.8-2-4.8H11a1.5 1.5 0 0 1-1.5-1.5zM8.5 10.2v2.2a4.5 4.5 0 1 0 6.3 5.6h2.2a6.5 6.5 0 1 1-8.5-7.8z');
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

export class SeatMap {
  /**
   * @param {HTMLElement} root  the element with data-testid="seat-map"
   * @param {{onToggle: (seatId: string) => void, note?: (seat) => string}} handlers
   *   `note(seat)` adds to the seat's tooltip (the page passes its price)
   */
  constructor(root, { onToggle, note = () => '' }) {
    this.root = root;
    this.onToggle = onToggle;
    this.note = note;
    /** seat id -> its button */
    this.buttons = new Map();
    /** y -> seat ids of that row ordered by x (for arrow keys) */
    this.rows = new Map();
    /** seat id -> its x (for arrow keys across rows) */
    this.xOf = new Map();
    this.ys = [];
    root.addEventListener('click', (ev) => {
      const btn = ev.target.closest('[data-seat-id]');
      if (btn && root.contains(btn)) this.onToggle(btn.dataset.seatId);
    });
    root.addEventListener('keydown', (ev) => this.#onKey(ev));
  }

  /** Replace the map with a message (loading, nothing chosen, error). */
  showMessage(text) {
    this.buttons.clear();
    this.rows.clear();
    this.xOf.clear();
    this.ys = [];
    this.root.replaceChildren();
    this.root.style.removeProperty('grid-template-columns');
    this.root.style.removeProperty('grid-template-rows');
    const p = document.createElement('p');
    p.className = 'seat-map-empty';
    p.textContent = text;
    this.root.append(p);
    this.root.removeAttribute('data-version');
  }

  /**
   * Draw all seats. Rebuilds the grid when the set of seats changed (another
   * hall), otherwise only refreshes each button, so keyboard focus stays put.
   */
  render(seats, selection) {
    const list = [...seats];
    if (!list.length) {
      this.showMessage('This hall has no seats.');
      return;
    }
    const same = list.length === this.buttons.size && list.every((s) => this.buttons.has(s.id));
    if (!same) this.#build(list);
    for (const seat of list) this.#paint(seat, selection.has(seat.id));
    this.#ensureTabStop();
  }

  /** Refresh some seats (after a hall_update). */
  update(seats, selection) {
    for (const seat of seats) if (this.buttons.has(seat.id)) this.#paint(seat, selection.has(seat.id));
    this.#ensureTabStop();
  }

  /** Briefly highlight seats (e.g. the ones somebody else just took). */
  flash(ids) {
    for (const id of ids) {
      const b = this.buttons.get(id);
      if (!b) continue;
      b.classList.remove('flash');
      void b.offsetWidth; // restart the animation
      b.classList.add('flash');
    }
  }

  /**
   * Ring seats that a refused hold would have left alone (SEAT_RULE
   * "orphan"), replacing any earlier ring; `[]` clears it. The ring is an
   * attribute, so it survives repaints of the seat's status.
   */
  markAlone(ids) {
    const wanted = new Set(ids);
    for (const [id, b] of this.buttons) {
      if (wanted.has(id)) b.dataset.alone = 'true';
      else delete b.dataset.alone;
    }
  }

  #build(seats) {
    const hadFocus = this.root.contains(document.activeElement) ? document.activeElement.dataset.seatId : null;
    this.buttons.clear();
    this.rows.clear();
    this.xOf.clear();
    this.root.replaceChildren();
    const xs = seats.map((s) => s.x);
    const ys = seats.map((s) => s.y);
    const minX = Math.min(...xs);
    const maxX = Math.max(...xs);
    const minY = Math.min(...ys);
    const maxY = Math.max(...ys);
    const cols = maxX - minX + 1;
    const rows = maxY - minY + 1;
    // Column 1 and the last column carry the row letters.
    this.root.style.gridTemplateColumns = `var(--row-label) repeat(${cols}, var(--seat)) var(--row-label)`;
    this.root.style.gridTemplateRows = `repeat(${rows}, var(--seat))`;
    this.root.style.setProperty('--cols', String(cols));

    const byY = new Map();
    for (const s of seats) {
      if (!byY.has(s.y)) byY.set(s.y, []);
      byY.get(s.y).push(s);
    }
    this.ys = [...byY.keys()].sort((a, b) => a - b);
    const frag = document.createDocumentFragment();
    for (const y of this.ys) {
      const row = byY.get(y).sort((a, b) => a.x - b.x);
      this.rows.set(y, row.map((s) => s.id));
      const gridRow = String(y - minY + 1);
      for (const [col, side] of [[1, 'left'], [cols + 2, 'right']]) {
        const label = document.createElement('span');
        label.className = `row-label ${side}`;
        label.setAttribute('aria-hidden', 'true');
        label.textContent = row[0].row;
        label.style.gridRow = gridRow;
        label.style.gridColumn = String(col);
        frag.append(label);
      }
      for (const s of row) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'seat';
        b.dataset.testid = 'seat';
        b.dataset.seatId = s.id;
        b.dataset.kind = s.kind;
        b.dataset.row = s.row;
        b.dataset.number = String(s.number);
        b.tabIndex = -1;
        b.style.gridRow = gridRow;
        b.style.gridColumn = String(s.x - minX + 2);
        if (s.kind === 'wheelchair') {
          b.append(wheelchairIcon());
        } else {
          const n = document.createElement('span');
          n.className = 'seat-num';
          n.textContent = String(s.number);
          b.append(n);
        }
        this.buttons.set(s.id, b);
        this.xOf.set(s.id, s.x);
        frag.append(b);
      }
    }
    this.root.append(frag);
    if (hadFocus && this.buttons.has(hadFocus)) this.#focus(hadFocus);
  }

  #paint(seat, selected) {
    const b = this.buttons.get(seat.id);
    b.dataset.status = seat.status;
    if (seat.mine) b.dataset.mine = 'true';
    else delete b.dataset.mine;
    b.setAttribute('aria-pressed', selected ? 'true' : 'false');
    const canSelect = selectable(seat);
    if (canSelect) b.removeAttribute('aria-disabled');
    else b.setAttribute('aria-disabled', 'true');
    const label = seatLabel(seat);
    b.setAttribute('aria-label', label);
    const note = this.note(seat);
    b.title = `${seatShort(seat)}: ${label.slice(label.indexOf(',') + 2)}${note ? ` · ${note}` : ''}`;
  }

  /** Keep exactly one seat in the tab order: the focused one, else the first selectable. */
  #ensureTabStop() {
    const current = [...this.buttons.values()].find((b) => b.tabIndex === 0);
    if (current) return;
    const first = [...this.buttons.values()].find((b) => !b.hasAttribute('aria-disabled')) || this.buttons.values().next().value;
    if (first) first.tabIndex = 0;
  }

  #focus(id) {
    for (const b of this.buttons.values()) if (b.tabIndex === 0) b.tabIndex = -1;
    const b = this.buttons.get(id);
    b.tabIndex = 0;
    b.focus();
  }

  #onKey(ev) {
    const btn = ev.target.closest('[data-seat-id]');
    if (!btn) return;
    const id = btn.dataset.seatId;
    const y = this.#yOf(id);
    const row = this.rows.get(y);
    const i = row.indexOf(id);
    let next = null;
    switch (ev.key) {
      case 'ArrowLeft': next = row[i - 1]; break;
      case 'ArrowRight': next = row[i + 1]; break;
      case 'Home': next = row[0]; break;
      case 'End': next = row[row.length - 1]; break;
      case 'ArrowUp':
      case 'ArrowDown': {
        const yi = this.ys.indexOf(y) + (ev.key === 'ArrowUp' ? -1 : 1);
        if (yi >= 0 && yi < this.ys.length) next = this.#nearestInRow(this.ys[yi], this.xOf.get(id));
        break;
      }
      default: return;
    }
    ev.preventDefault();
    if (next) this.#focus(next);
  }

  #yOf(id) {
    for (const [y, ids] of this.rows) if (ids.includes(id)) return y;
    return null;
  }

  /** The seat of row `y` whose x is closest to `x`. */
  #nearestInRow(y, x) {
    let best = null;
    let bestDist = Infinity;
    for (const id of this.rows.get(y)) {
      const d = Math.abs(this.xOf.get(id) - x);
      if (d < bestDist) { best = id; bestDist = d; }
    }
    return best;
  }
}
