/** Fakes for unit tests of one layer: a message pipe, a WebSocket. */

import type { Message } from "../src/codec.js";
import { ConnectionClosed } from "../src/errors.js";
import type { TetherError } from "../src/errors.js";
import type { ConnectionState, MessagePipe } from "../src/transport.js";
import type { WebSocketLike } from "../src/ws.js";

/** A pipe whose sent messages a test reads, and into which it feeds the backend's. */
export class FakePipe implements MessagePipe {
  onmessage: ((message: Message, size?: number) => void) | null = null;
  onclose: ((error: TetherError) => void) | null = null;
  onstate: ((state: ConnectionState) => void) | null = null;
  readonly sent: Message[] = [];
  private waiters: (() => void)[] = [];
  ended = false;

  async send(message: Message): Promise<void> {
    if (this.ended) throw new ConnectionClosed("fake pipe ended");
    this.sent.push(structuredClone(message));
    for (const wake of this.waiters.splice(0)) wake();
  }

  async close(): Promise<void> {
    this.ended = true;
  }

  /** The backend sends `message`. */
  feed(message: unknown, size?: number): void {
    (this.onmessage as (m: unknown, s?: number) => void)(message, size);
  }

  /** The pipe ends from the other side. */
  drop(error: TetherError = new ConnectionClosed("dropped", { closeCode: 1006 })): void {
    this.ended = true;
    this.onclose?.(error);
  }

  /** Waits (bounded) until a sent message matches. */
  async waitFor(predicate: (m: Message) => boolean, what = "a message", timeoutMs = 2000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.sent.find(predicate);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; sent: ${JSON.stringify(this.sent)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  of(t: string): Message[] {
    return this.sent.filter((m) => m.t === t);
  }
}

/** Lets pending promise callbacks run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A WebSocket a test drives: `instances` holds each made. */
export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: (string | Uint8Array)[] = [];
  closedWith: [number | undefined, string | undefined] | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this);
  }

  send(data: string | Uint8Array): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(data instanceof Uint8Array ? data.slice() : data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = [code, reason];
    if (this.readyState === 1) {
      this.readyState = 2;
      queueMicrotask(() => this.serverClose(code ?? 1005, reason ?? ""));
    }
  }

  // -- the server's side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  text(message: unknown): void {
    this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
  }

  binary(bytes: Uint8Array): void {
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.onmessage?.({ data: buffer });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  json(): Record<string, unknown>[] {
    return this.sent.filter((d): d is string => typeof d === "string").map((d) => JSON.parse(d) as Record<string, unknown>);
  }
}
