/**
 * IPC over HTTP (docs/http.md "IPC"): the page's messages are POSTs, one at a
 * time and numbered (`X-Tether-Seq`, so a POST sent again is taken once); the
 * backend's come on an event stream read with fetch (not `EventSource`: it
 * sends `X-Session-Token`, `Last-Event-ID` and acks, and tells a drop from the
 * backend's `event: close`). A dropped stream is resumed within the backend's
 * grace period; nothing is lost, nothing comes twice.
 */

import { toJsonText } from "./codec.js";
import type { Message } from "./codec.js";
import { ConnectionClosed, TetherError, preview } from "./errors.js";
import { errorOfAnswer, httpPrefix } from "./rpc_http.js";
import { SseParser } from "./sse.js";
import { utf8Length } from "./streams.js";
import type { ConnectionState, ConnectOptions, MessagePipe, Welcome } from "./transport.js";

/** How a broken event stream or POST is tried again (the Python client's `RetryPolicy()` defaults). */
export interface HttpIpcRetry {
  /** Tries in all, the first included (10). */
  attempts: number;
  /** The first backoff, in ms (100); it doubles up to `maxDelayMs`. */
  firstDelayMs: number;
  /** The longest backoff, in ms (2000). */
  maxDelayMs: number;
}

/** Options of `openHttpIpc` beyond the connection's. */
export interface HttpIpcOptions extends ConnectOptions {
  retry?: HttpIpcRetry;
}

const DEFAULT_RETRY: HttpIpcRetry = { attempts: 10, firstDelayMs: 100, maxDelayMs: 2000 };
/** The most text an unfinished event may hold (a backend's message is at most 16 MiB). */
const MAX_EVENT_CHARS = 17 * 2 ** 20;

/** What `POST {prefix}/ipc` answers. */
interface Opened {
  session_id: string;
  token: string;
  events: string;
  welcome: Welcome;
  ping: { interval_ms: number; timeout_ms: number } | null;
  grace_ms: number;
  replay?: { messages: number; bytes: number } | null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Why a stream broke (it is resumed), as opposed to the session ending. */
class Broken extends Error {}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}


/** The pipe of one IPC session over HTTP. */
export class HttpIpcPipe implements MessagePipe {
  onclose: ((error: TetherError) => void) | null = null;
  onstate: ((state: ConnectionState) => void) | null = null;
  private handler: ((message: Message, size?: number) => void) | null = null;
  private early: [Message, number][] = [];
  private state: ConnectionState = "connected";
  private ended: ConnectionClosed | null = null;
  private readonly target: string;
  private readonly eventsUrl: string;
  private lastEventId: string | null = null;
  private seq = 0;
  private queue: Promise<void> = Promise.resolve();
  private events: AbortController | null = null;
  private connected: Promise<void> = Promise.resolve();
  private markConnected: () => void = () => undefined;
  // Acks: once a quarter of the replay buffer was taken, one in flight.
  private readonly ackEvery: [number, number] | null;
  private unacked = 0;
  private unackedBytes = 0;
  private ackDue: string | null = null;
  private acking = false;

  constructor(
    prefix: string,
    private readonly opened: Opened,
    private readonly retry: HttpIpcRetry,
  ) {
    this.target = `${prefix}/ipc/${encodeURIComponent(opened.session_id)}`;
    this.eventsUrl = new URL(opened.events, prefix + "/").href;
    const replay = opened.replay;
    this.ackEvery =
      isRecord(replay) && replay.messages > 0 && replay.bytes > 0
        ? [Math.max(1, Math.floor(replay.messages / 4)), Math.max(1, Math.floor(replay.bytes / 4))]
        : null;
    void this.run();
  }

  get onmessage(): ((message: Message, size?: number) => void) | null {
    return this.handler;
  }

  /** Messages that came before the session set this are handed to it first. */
  set onmessage(handler: ((message: Message, size?: number) => void) | null) {
    this.handler = handler;
    if (handler === null) return;
    const early = this.early;
    this.early = [];
    for (const [message, size] of early) handler(message, size);
  }

  /** The session's id (the backend's). */
  get sessionId(): string {
    return this.opened.session_id;
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    if (state === "reconnecting") this.connected = new Promise((resolve) => (this.markConnected = resolve));
    else this.markConnected();
    this.onstate?.(state);
  }

  private end(error: ConnectionClosed): void {
    if (this.ended !== null) return;
    this.ended = error;
    this.events?.abort(error);
    this.setState("closed");
    this.onclose?.(error);
  }

  private headers(): Record<string, string> {
    return { "X-Session-Token": this.opened.token };
  }

  // -- the event stream -------------------------------------------------------

  private async run(): Promise<void> {
    let resuming = false;
    while (this.ended === null) {
      let why: string;
      try {
        await this.readEvents(resuming);
        return; // `event: close`, or the pipe ended
      } catch (error) {
        if (this.ended !== null) return;
        if (!(error instanceof Broken)) {
          this.end(error instanceof ConnectionClosed ? error : new ConnectionClosed(String(error)));
          return;
        }
        why = error.message;
      }
      resuming = true;
      try {
        await this.resume(why);
      } catch (error) {
        this.end(error instanceof ConnectionClosed ? error : new ConnectionClosed(String(error)));
        return;
      }
    }
  }

  /** Opens the stream again with `Last-Event-ID`: at once, then with backoff, within the grace period. */
  private async resume(reason: string): Promise<void> {
    this.setState("reconnecting");
    const started = Date.now();
    const grace = this.opened.grace_ms;
    let last = reason;
    for (let tries = 1; tries < this.retry.attempts; tries++) {
      const wait = tries === 1 ? 0 : Math.min(this.retry.firstDelayMs * 2 ** (tries - 2), this.retry.maxDelayMs);
      if (Date.now() + wait > started + grace) break;
      if (wait > 0) await delay(wait);
      if (this.ended !== null) throw this.ended;
      try {
        await this.openEvents(true, started + grace);
        return;
      } catch (error) {
        if (!(error instanceof Broken)) throw error;
        last = error.message;
      }
    }
    throw new ConnectionClosed(
      `${reason}, and could not be made again within the backend's grace period of ${grace / 1000} s (the last try: ${last})`,
    );
  }

  private response: Response | null = null;

  /** Opens the event stream (resuming: from `Last-Event-ID`); `deadline`: when to give up waiting for its answer. */
  private async openEvents(resuming: boolean, deadline?: number): Promise<void> {
    const controller = new AbortController();
    this.events = controller;
    const headers: Record<string, string> = { ...this.headers(), Accept: "text/event-stream" };
    if (this.ackEvery !== null) headers["X-Tether-Acks"] = "1";
    if (resuming) headers["Last-Event-ID"] = this.lastEventId ?? "0";
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(() => controller.abort(new Broken("no answer")), Math.max(0, deadline - Date.now()));
    let response: Response;
    try {
      response = await fetch(this.eventsUrl, { headers, signal: controller.signal });
    } catch (error) {
      if (this.ended !== null) throw this.ended;
      if (controller.signal.reason instanceof Broken) throw controller.signal.reason;
      throw new Broken(`the connection to the backend was lost (${error instanceof Error ? error.message : String(error)})`);
    } finally {
      clearTimeout(timer);
    }
    if (response.status === 404 && resuming) {
      await response.body?.cancel();
      throw new ConnectionClosed(
        `the backend no longer has the session: it ended it, or the event stream was away longer than its grace period of ${this.opened.grace_ms / 1000} s`,
        { status: 404 },
      );
    }
    if (!response.ok || response.body === null) {
      const error = await errorOfAnswer(response, "the event stream", false);
      throw new Broken(`the backend answered ${response.status} to the event stream: ${error.message}`);
    }
    this.response = response;
    this.setState("connected");
  }

  private silenceMs(): number | null {
    const ping = this.opened.ping;
    return ping === null || ping === undefined ? null : ping.interval_ms + ping.timeout_ms;
  }

  /** Reads the stream until `event: close` (returns) or a break (throws `Broken`). */
  private async readEvents(resuming: boolean): Promise<void> {
    const silence = this.silenceMs();
    if (this.response === null) await this.openEvents(resuming, silence === null ? undefined : Date.now() + silence);
    const response = this.response as Response;
    this.response = null;
    const controller = this.events as AbortController;
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      if (silence === null) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(
        () => controller.abort(new Broken(`nothing came from the backend for ${silence / 1000} s (no event, no ping)`)),
        silence,
      );
    };
    arm();
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (this.ended !== null) throw this.ended;
          if (controller.signal.reason instanceof Broken) throw controller.signal.reason;
          throw new Broken(`the connection to the backend was lost (${error instanceof Error ? error.message : String(error)})`);
        }
        if (chunk.done) throw new Broken("the backend closed the event stream");
        arm();
        for (const event of parser.feed(decoder.decode(chunk.value, { stream: true }))) {
          if (this.ended !== null) return;
          if (event.event === "ping") this.pong(event.data);
          else if (event.event === "close") {
            let reason = "the backend closed the session";
            try {
              const data: unknown = JSON.parse(event.data);
              if (isRecord(data) && typeof data["reason"] === "string") reason = data["reason"];
            } catch {
              // the default reason
            }
            this.end(new ConnectionClosed(reason));
            return;
          } else this.take(event.data, event.id);
        }
        if (parser.pending > MAX_EVENT_CHARS) {
          this.end(new ConnectionClosed("an event from the backend is over the size limit"));
          return;
        }
      }
    } finally {
      clearTimeout(watchdog);
      controller.abort(new Broken("done"));
      reader.releaseLock();
    }
  }

  private take(data: string, id: string | null): void {
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      message = undefined;
    }
    if (!isRecord(message) || typeof message["t"] !== "string") {
      this.end(new ConnectionClosed(`the backend sent an event that is not a message: ${preview(data)}`));
      return;
    }
    const size = utf8Length(data);
    if (id !== null && !/^\d{1,15}$/.test(id)) {
      this.end(new ConnectionClosed(`the backend sent an event id that is not a message number: ${preview(id)}`));
      return;
    }
    if (id !== null) {
      this.lastEventId = id;
      if (this.ackEvery !== null) {
        this.unacked += 1;
        this.unackedBytes += size;
        if (this.unacked >= this.ackEvery[0] || this.unackedBytes >= this.ackEvery[1]) {
          this.unacked = this.unackedBytes = 0;
          this.ackDue = id;
          void this.sendAcks();
        }
      }
    }
    if (this.handler === null) this.early.push([message as Message, size]);
    else this.handler(message as Message, size);
  }

  /** Answers a ping at once (not a session message: no `X-Tether-Seq`). A lost pong is the stream's to report. */
  private pong(data: string): void {
    let id: unknown;
    try {
      id = (JSON.parse(data) as Record<string, unknown>)["id"];
    } catch {
      return;
    }
    if (typeof id !== "number") return;
    void this.post(toJsonText({ t: "pong", id }), null).catch(() => undefined);
  }

  /** One ack in flight, each for the newest event taken; a lost one is made good by the next. */
  private async sendAcks(): Promise<void> {
    if (this.acking) return;
    this.acking = true;
    try {
      while (this.ackDue !== null && this.ended === null) {
        const id = this.ackDue;
        this.ackDue = null;
        await this.post(`{"t":"ack","id":${Number(id)}}`, null).catch(() => undefined);
      }
    } finally {
      this.acking = false;
    }
  }

  // -- messages to the backend -----------------------------------------------

  private async post(body: string, seq: number | null): Promise<Response> {
    const headers: Record<string, string> = { ...this.headers(), "Content-Type": "application/json" };
    if (seq !== null) headers["X-Tether-Seq"] = String(seq);
    return fetch(this.target, { method: "POST", headers, body });
  }

  /** Resolves, once the backend took it, with the message's size on the wire (its JSON text's bytes). */
  send(message: Message): Promise<number> {
    if (this.ended !== null) return Promise.reject(this.ended);
    const body = toJsonText(message);
    const seq = ++this.seq;
    const sent = this.queue.then(() => this.deliver(body, seq));
    this.queue = sent.catch(() => undefined);
    return sent.then(() => utf8Length(body));
  }

  /** POSTs one message, waiting while the stream resumes; sent again (same number) when its connection fails. */
  private async deliver(body: string, seq: number): Promise<void> {
    let started: number | null = null;
    for (let tries = 1; ; tries++) {
      await this.connected;
      if (this.ended !== null) throw this.ended;
      let response: Response;
      try {
        response = await this.post(body, seq);
      } catch (error) {
        if (this.ended !== null) throw this.ended;
        started ??= Date.now();
        const wait = tries === 1 ? 0 : Math.min(this.retry.firstDelayMs * 2 ** (tries - 2), this.retry.maxDelayMs);
        if (tries >= this.retry.attempts || Date.now() + wait > started + this.opened.grace_ms) {
          const lost = new ConnectionClosed(
            `the connection to the backend was lost sending a message (${error instanceof Error ? error.message : String(error)}), and it could not be sent again within the backend's grace period of ${this.opened.grace_ms / 1000} s (${tries} tries)`,
          );
          this.end(lost);
          throw lost;
        }
        if (wait > 0) await delay(wait);
        continue;
      }
      if (response.ok) {
        await response.body?.cancel();
        return;
      }
      const error = await errorOfAnswer(response, "a message POSTed to the session", true);
      if (response.status === 404) {
        const gone = new ConnectionClosed(`the backend no longer has the session: ${error.message}`, { status: 404 });
        this.end(gone);
        throw gone;
      }
      throw error;
    }
  }

  async close(reason = "closed"): Promise<void> {
    if (this.ended !== null) return;
    this.end(new ConnectionClosed(reason));
    try {
      const response = await fetch(this.target, { method: "DELETE", headers: this.headers() });
      await response.body?.cancel();
    } catch {
      // the backend ends the session after its grace period anyway
    }
  }
}

/** Opens an IPC session at the HTTP prefix `url` (`http://host:port/rpc`) with `hello`; its welcome and the pipe of its messages. */
export async function openHttpIpc(
  url: string,
  hello: Message,
  options: HttpIpcOptions = {},
): Promise<{ welcome: Welcome; pipe: MessagePipe }> {
  const prefix = httpPrefix(url);
  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
  if (options.authorization !== undefined) headers["Authorization"] = options.authorization;
  if (options.signal?.aborted) throw options.signal.reason;
  let response: Response;
  try {
    const init: RequestInit = { method: "POST", headers, body: toJsonText(hello) };
    if (options.signal !== undefined) init.signal = options.signal;
    response = await fetch(`${prefix}/ipc`, init);
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw new ConnectionClosed(
      `could not reach a tether backend at ${prefix} (${error instanceof Error ? error.message : String(error)}): is it running, is the URL its RPC prefix, and does it allow this page's origin (cors_origins)? A refused origin looks the same to a page: see the browser console`,
    );
  }
  if (!response.ok) throw await errorOfAnswer(response, `POST ${prefix}/ipc`, false);
  const text = await response.text();
  let opened: unknown;
  try {
    opened = JSON.parse(text);
  } catch {
    opened = undefined;
  }
  if (
    !isRecord(opened) ||
    typeof opened["session_id"] !== "string" ||
    typeof opened["token"] !== "string" ||
    typeof opened["events"] !== "string" ||
    !isRecord(opened["welcome"])
  ) {
    throw new ConnectionClosed(
      `POST ${prefix}/ipc did not answer an IPC session (expected {"session_id", "token", "events", "welcome", ...}, got ${preview(text) || "no body"}): does the backend serve IPC at this prefix?`,
      { status: response.status },
    );
  }
  const grace = typeof opened["grace_ms"] === "number" ? opened["grace_ms"] : 5000;
  const pipe = new HttpIpcPipe(prefix, { ...(opened as unknown as Opened), grace_ms: grace }, options.retry ?? DEFAULT_RETRY);
  return { welcome: opened["welcome"] as unknown as Welcome, pipe };
}
