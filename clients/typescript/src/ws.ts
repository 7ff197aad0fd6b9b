/**
 * A session's messages over one WebSocket: the handshake (`hello`,
 * `welcome`), binary frames for messages with bytes, the HTTP server's
 * in-envelope pings, and the close.
 */

import { decodeFrame, encodeFrame, toJsonText } from "./codec.js";
import type { Message } from "./codec.js";
import { ConnectionClosed, TetherError, errorFromWire, preview } from "./errors.js";
import { utf8Length } from "./streams.js";
import type { ConnectionState, MessagePipe, Welcome } from "./transport.js";

/** What `openWebSocket` needs of a WebSocket class: the browser's, or a fake in tests. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface WebSocketOptions {
  /** Aborts the handshake. */
  signal?: AbortSignal;
  /** The WebSocket class (the global `WebSocket` when left out). */
  WebSocket?: WebSocketConstructor;
  /** How long the handshake may take, in milliseconds (10 s when left out). */
  handshakeTimeoutMs?: number;
}

const OPEN = 1;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** What a close code (and reason) means, for the error of the calls it ends. */
export function closeError(code: number, reason: string, opened: boolean, url: string): ConnectionClosed {
  if (!opened && code === 1006) {
    return new ConnectionClosed(
      `could not open a WebSocket to ${url} (close 1006 before it opened): the server is not reachable there, ` +
        "or it refused the handshake. A browser shows a refused handshake only as this: if the page's origin " +
        "is not allowed (the server's cors_origins / allowed origins), add it there; check the URL's path " +
        "(/rpc/ws on the HTTP server, / on websocket.serve)",
      { closeCode: code },
    );
  }
  const said = reason !== "" ? `: ${reason}` : "";
  const meaning: Record<number, string> = {
    1000: "the connection was closed",
    1001: "the server is going away (shutting down)",
    1006: "the connection dropped without a close frame",
    1008: "the server refused the session (policy)",
    1009: "a message was too large for the server",
    1011: "the server failed",
    1013: "the server is busy: try again later",
  };
  const what = meaning[code] ?? "the connection closed";
  return new ConnectionClosed(`${what} (close ${code})${said}`, { closeCode: code });
}

/**
 * Opens a WebSocket to `url`, sends `hello` (with `"binary": true`) and waits
 * for the `welcome`. Rejects with the backend's error (`errorFromWire`) when it
 * refuses the session, or `ConnectionClosed` when the socket closes first.
 */
export function openWebSocket(url: string, hello: Message, options: WebSocketOptions = {}): Promise<{ welcome: Welcome; pipe: MessagePipe }> {
  const Ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (Ctor === undefined) {
    return Promise.reject(new TypeError("no WebSocket class: pass options.WebSocket (this runtime has no global WebSocket)"));
  }
  const signal = options.signal;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const socket = new Ctor(url);
  socket.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    let opened = false;
    let refusal: TetherError | null = null;
    let settled = false;
    const timeoutMs = options.handshakeTimeoutMs ?? 10_000;
    const fail = (error: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.onopen = socket.onmessage = socket.onerror = null;
      socket.onclose = null;
      try {
        socket.close(1000);
      } catch {
        // closing a socket that never opened may throw in some runtimes
      }
      reject(error);
    };
    const onAbort = (): void => fail(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => {
      fail(new ConnectionClosed(`the WebSocket handshake with ${url} took longer than ${timeoutMs} ms`));
    }, timeoutMs);
    socket.onopen = () => {
      opened = true;
      socket.send(toJsonText({ ...hello, binary: true }));
    };
    socket.onerror = () => {
      // the close event that follows says more
    };
    socket.onclose = (event) => fail(refusal ?? closeError(event.code, event.reason, opened, url));
    socket.onmessage = (event) => {
      let message: Message;
      try {
        message = readMessage(event.data).message;
      } catch (error) {
        fail(new ConnectionClosed(`the server's answer to hello could not be read (${String(error)})`));
        return;
      }
      if (message.t === "ping") {
        socket.send(toJsonText({ t: "pong", id: message["id"] }));
        return;
      }
      if (message.t === "error") {
        refusal = errorFromWire(message["error"]);
        fail(refusal);
        return;
      }
      if (message.t !== "welcome" || typeof message["session_id"] !== "string") {
        fail(new ConnectionClosed(`expected the server's welcome, got ${preview(message)}`));
        return;
      }
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      const welcome: Welcome = {
        session_id: message["session_id"],
        channels: (message["channels"] ?? {}) as Record<string, string>,
        interfaces: (message["interfaces"] ?? {}) as Welcome["interfaces"],
        binary: message["binary"] === true,
      };
      resolve({ welcome, pipe: new WebSocketPipe(socket, url, welcome.binary === true, typeof message["resume_token"] === "string") });
    };
  });
}

/** A message of a WebSocket frame: text is JSON; binary is a frame (first byte 0) or JSON. */
function readMessage(data: unknown): { message: Message; size: number } {
  if (typeof data === "string") {
    const message = JSON.parse(data) as unknown;
    if (typeof message !== "object" || message === null || Array.isArray(message)) throw new TypeError("not a JSON object");
    return { message: message as Message, size: utf8Length(data) };
  }
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
  if (bytes === null) throw new TypeError(`a frame of an unexpected type (${typeof data})`);
  if (bytes.length > 0 && bytes[0] !== 0) return { message: readMessage(utf8.decode(bytes)).message, size: bytes.length };
  return { message: decodeFrame(bytes), size: bytes.length };
}

class WebSocketPipe implements MessagePipe {
  onclose: ((error: TetherError) => void) | null = null;
  onstate: ((state: ConnectionState) => void) | null = null;
  private handler: ((message: Message, size?: number) => void) | null = null;
  private backlog: [Message, number][] = [];
  private ended: TetherError | null = null;
  private lastRefusal: TetherError | null = null;
  private closing: (() => void) | null = null;

  constructor(
    private readonly socket: WebSocketLike,
    private readonly url: string,
    private readonly binary: boolean,
    private readonly resumable: boolean,
  ) {
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      const error = this.lastRefusal !== null && event.code !== 1000 ? this.withCode(this.lastRefusal, event.code) : closeError(event.code, event.reason, true, url);
      this.end(error);
    };
  }

  /** Messages that came before the session set `onmessage` wait for it. */
  get onmessage(): ((message: Message, size?: number) => void) | null {
    return this.handler;
  }

  set onmessage(handler: ((message: Message, size?: number) => void) | null) {
    this.handler = handler;
    if (handler === null) return;
    const waiting = this.backlog;
    this.backlog = [];
    for (const [message, size] of waiting) handler(message, size);
  }

  async send(message: Message): Promise<number> {
    if (this.ended !== null || this.socket.readyState !== OPEN) {
      throw new ConnectionClosed(`the connection to ${this.url} has ended${this.ended !== null ? `: ${this.ended.message}` : ""}`);
    }
    const frame = this.binary ? encodeFrame(message) : null;
    if (frame !== null) {
      this.socket.send(frame);
      return frame.length;
    }
    const text = toJsonText(message);
    this.socket.send(text);
    return utf8Length(text);
  }

  async close(reason = "the page closed the connection"): Promise<void> {
    if (this.ended !== null) return;
    const closed = new Promise<void>((resolve) => {
      this.closing = resolve;
    });
    try {
      if (this.resumable && this.socket.readyState === OPEN) this.socket.send(toJsonText({ t: "bye" }));
      // a close reason is at most 123 bytes of UTF-8
      this.socket.close(1000, utf8Length(reason) <= 123 ? reason : "closed by the page");
    } catch {
      // already closing
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bounded = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 2000); // a server that never completes the close
    });
    await Promise.race([closed, bounded]);
    clearTimeout(timer);
    this.end(new ConnectionClosed(reason, { closeCode: 1000 }));
  }

  private receive(data: unknown): void {
    let message: Message;
    let size: number;
    try {
      ({ message, size } = readMessage(data));
    } catch (error) {
      this.deliver({ t: "malformed", error: String(error), data: typeof data === "string" ? data : "<binary>" }, 0);
      return;
    }
    if (message.t === "ping") {
      if (this.socket.readyState === OPEN) this.socket.send(toJsonText({ t: "pong", id: message["id"] }));
      return;
    }
    if (message.t === "error" && message["id"] === null) this.lastRefusal = errorFromWire(message["error"]);
    this.deliver(message, size);
  }

  private deliver(message: Message, size: number): void {
    if (this.handler === null) this.backlog.push([message, size]);
    else this.handler(message, size);
  }

  private withCode(error: TetherError, code: number): TetherError {
    if (error instanceof ConnectionClosed) return error;
    return new ConnectionClosed(`${error.message} (close ${code})`, { closeCode: code, cause: error, status: error.status, details: error.details });
  }

  private end(error: TetherError): void {
    if (this.ended !== null) return;
    this.ended = error;
    this.closing?.();
    this.socket.onmessage = null;
    this.socket.onclose = null;
    this.onclose?.(error);
  }
}
