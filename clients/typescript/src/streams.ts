/**
 * Flow control of streams (docs/wire.md "Streams"): the receiving end of a
 * result stream grants credit in windows, the sending end of an argument
 * stream spends the credit the callee granted.
 */

/** How much of a stream a receiver takes before its sender waits. */
export interface StreamWindow {
  items: number;
  bytes: number;
}

/** 256 items and 4 MiB, as tether's `StreamWindow` by default. */
export const DEFAULT_WINDOW: StreamWindow = { items: 256, bytes: 4 * 1024 * 1024 };

const utf8 = new TextEncoder();

/** The UTF-8 length of `text`: a message's size when it goes as JSON. */
export function utf8Length(text: string): number {
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  return ascii ? text.length : utf8.encode(text).length;
}

/** The receiving end of a result stream: what is buffered, and the credit to give back. */
export class Inflow {
  readonly window: StreamWindow;
  private allowedItems = 0;
  private allowedBytes = 0;
  private takenItems = 0;
  private takenBytes = 0;
  readonly buffered: { value: unknown; size: number }[] = [];

  constructor(window: StreamWindow = DEFAULT_WINDOW) {
    this.window = window;
  }

  /** The whole window, as the first grant. */
  initialGrant(): StreamWindow {
    this.allowedItems += this.window.items;
    this.allowedBytes += this.window.bytes;
    return { ...this.window };
  }

  /** An item the sender sent; false when it came past its credit (a protocol error). */
  put(value: unknown, size: number): boolean {
    if (this.allowedItems <= 0 || this.allowedBytes <= 0) return false;
    this.allowedItems -= 1;
    this.allowedBytes -= size;
    this.buffered.push({ value, size });
    return true;
  }

  /** The next buffered item; the caller checked there is one. */
  take(): unknown {
    const entry = this.buffered.shift() as { value: unknown; size: number };
    this.takenItems += 1;
    this.takenBytes += entry.size;
    return entry.value;
  }

  /** Credit to give back now, or null until half the window (in items or bytes) was taken. */
  grantDue(): StreamWindow | null {
    if (this.takenItems * 2 < this.window.items && this.takenBytes * 2 < this.window.bytes) return null;
    const grant = { items: this.takenItems, bytes: this.takenBytes };
    this.takenItems = this.takenBytes = 0;
    this.allowedItems += grant.items;
    this.allowedBytes += grant.bytes;
    return grant;
  }
}

/** The sending end of an argument stream: the credit the callee granted, and a wake-up for the sender waiting on it. */
export class Outflow {
  items = 0;
  bytes = 0;
  private waiter: (() => void) | null = null;

  grant(items: number, bytes: number): void {
    this.items += items;
    this.bytes += bytes;
    this.wake();
  }

  maySend(): boolean {
    return this.items > 0 && this.bytes > 0;
  }

  spend(size: number): void {
    this.items -= 1;
    this.bytes -= size;
  }

  /** Resolves at the next grant (or `wake`). */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Lets a waiting sender look again (the call ended, say). */
  wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

/** Iterates a sync or async iterable the same way. */
export function iteratorOf<T>(source: AsyncIterable<T> | Iterable<T>): AsyncIterator<T> | Iterator<T> {
  if (source !== null && typeof source === "object" && Symbol.asyncIterator in source) {
    return (source as AsyncIterable<T>)[Symbol.asyncIterator]();
  }
  if (source !== null && typeof source === "object" && Symbol.iterator in source) {
    return (source as Iterable<T>)[Symbol.iterator]();
  }
  throw new TypeError("a stream argument must be an Iterable or an AsyncIterable");
}
