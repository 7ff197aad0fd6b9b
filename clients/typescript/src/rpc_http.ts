/**
 * RPC over HTTP: one fetch per call (docs/http.md "RPC" and "Streams").
 *
 * A unary call is `POST {prefix}/{iface}/{ver}/{op}` with the JSON array of
 * its arguments, or a frame when they hold bytes; a server stream is the same
 * POST answered with length-prefixed records as the impl yields; a client
 * stream's items go in one body of records (a browser streams a request body
 * only over HTTP/2, so the items are read to their end first).
 */

import { FRAME_CONTENT_TYPE, applyShape, decodeFrame, encodeFrame, hasBytes, toJsonText } from "./codec.js";
import type { Message } from "./codec.js";
import type { ResolvedCall, SessionContext } from "./context.js";
import {
  CallMayHaveRun,
  ConnectionClosed,
  DeadlineExceeded,
  InvalidRequest,
  NotFound,
  TetherError,
  errorFromWire,
  preview,
} from "./errors.js";
import type { ConnectOptions, RpcRequest, RpcTransport } from "./transport.js";

/** The content type of a stream of length-prefixed records (docs/http.md "Streams"). */
export const STREAM_CONTENT_TYPE = "application/vnd.tether.stream";
/** The longest record this client reads (a record is one stream message). */
const MAX_RECORD = 2 ** 31;

type Described = Record<string, { version: string; operations: string[]; streams?: Record<string, string> }>;

/** The prefix of `url`, without a trailing slash; a clear error for a URL fetch cannot use. */
export function httpPrefix(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url, globalThis.location?.href);
  } catch {
    throw new TypeError(`expected an http(s) URL of the backend's RPC prefix (http://host:port/rpc), not ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`expected an http(s) URL of the backend's RPC prefix (http://host:port/rpc), not ${JSON.stringify(url)}`);
  }
  return parsed.href.replace(/\/+$/, "");
}

/** The headers every request of a connection carries. */
export function sessionHeaders(session: SessionContext): Record<string, string> {
  const headers: Record<string, string> = { "X-Protocol-Version": "1" };
  if (session.sessionId !== undefined) headers["X-Session-Id"] = session.sessionId;
  if (session.application !== undefined) {
    headers["X-Application-Id"] = session.application.id;
    headers["X-Application-Version"] = session.application.version;
  }
  if (session.authorization !== undefined) headers["Authorization"] = session.authorization;
  return headers;
}

/** The headers of one call: its ActivityId, trace context, metadata and deadline. */
export function callHeaders(call: ResolvedCall): Record<string, string> {
  const headers: Record<string, string> = {
    "X-Correlation-ID": call.activityId,
    traceparent: call.traceparent,
  };
  if (call.metadata !== undefined) {
    headers["baggage"] = Object.entries(call.metadata)
      .map(([key, value]) => `${key}=${encodeURIComponent(value)}`)
      .join(",");
  }
  if (call.timeoutMs !== undefined) headers["X-Timeout-Ms"] = String(call.timeoutMs);
  return headers;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The error of an answer that is not a success: tether's error body as its
 * error, anything else (a proxy's page, another server) said as such.
 * `sent`: a call went out, so a gateway's failure may have run it.
 */
export async function errorOfAnswer(response: Response, what: string, sent: boolean): Promise<TetherError> {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // the body broke off: judged by the status alone
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (isRecord(body) && isRecord(body["error"]) && typeof body["error"]["code"] === "string") {
    return errorFromWire(body["error"], response.status);
  }
  const came = `${response.status} ${response.statusText}`.trim();
  const message = `${what} was answered ${came}, which is not a tether answer (${preview(text) || "no body"}): is the URL a tether backend's RPC prefix, and a proxy in between passing it on?`;
  if (sent && (response.status === 502 || response.status === 504)) {
    return new CallMayHaveRun(`${message}; the call may have run`, { status: response.status });
  }
  return new ConnectionClosed(message, { status: response.status });
}

/** Runs `fetch`, turning a failure of the network into `failure(why)` and an abort into its reason. */
async function fetchOr(
  input: string,
  init: RequestInit,
  controller: AbortController,
  failure: (why: string) => TetherError,
): Promise<Response> {
  try {
    return await fetch(input, { ...init, signal: controller.signal });
  } catch (error) {
    if (controller.signal.aborted) throw controller.signal.reason;
    throw failure(error instanceof Error ? error.message : String(error));
  }
}

/** One call's abort: the caller's signal, its deadline, or the transport closing. */
class CallAbort {
  readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort: () => void;

  constructor(
    private readonly call: ResolvedCall,
    what: string,
  ) {
    const signal = call.signal;
    this.onAbort = () => this.abort(signal?.reason);
    if (signal?.aborted) this.abort(signal.reason);
    signal?.addEventListener("abort", this.onAbort, { once: true });
    if (call.timeoutMs !== undefined && !this.controller.signal.aborted) {
      const ms = call.timeoutMs;
      this.timer = setTimeout(
        () =>
          this.abort(
            new DeadlineExceeded("deadline-exceeded", `${what} did not finish within its deadline of ${ms} ms`, {
              status: 504,
              activityId: call.activityId,
            }),
          ),
        Math.min(ms, 2 ** 31 - 1),
      );
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
    this.done();
  }

  done(): void {
    clearTimeout(this.timer);
    this.call.signal?.removeEventListener("abort", this.onAbort);
  }
}

/** Reads a body's length-prefixed records (`application/vnd.tether.stream`). */
async function* records(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  try {
    for (;;) {
      while (buffer.length >= 4) {
        const length = new DataView(buffer.buffer, buffer.byteOffset, 4).getUint32(0, false);
        if (length > MAX_RECORD) throw new InvalidRequest("bad-request", `a stream record of ${length} bytes is over the limit`);
        if (buffer.length < 4 + length) break;
        yield buffer.slice(4, 4 + length);
        buffer = buffer.subarray(4 + length);
      }
      const { done, value } = await reader.read();
      if (done) {
        if (buffer.length > 0) throw new Error("the stream ended inside a record");
        return;
      }
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
  } finally {
    reader.releaseLock();
  }
}

/** Reads a body's lines (`application/x-ndjson`), for a server that answers so. */
async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array, void, undefined> {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let text = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      text += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end: number;
      while ((end = text.indexOf("\n")) >= 0) {
        const line = text.slice(0, end).trim();
        text = text.slice(end + 1);
        if (line !== "") yield encoder.encode(line);
      }
      if (done) {
        if (text.trim() !== "") yield encoder.encode(text.trim());
        return;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** The message of one record: JSON text, or a frame (first byte 0). */
function messageOf(record: Uint8Array): Message {
  if (record[0] === 0) return decodeFrame(record);
  const message: unknown = JSON.parse(textDecoder.decode(record));
  if (!isRecord(message) || typeof message["t"] !== "string") throw new Error(`not a stream message: ${preview(message)}`);
  return message as Message;
}

function record(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, false);
  out.set(payload, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const encoder = new TextEncoder();

/** The body of a call's arguments: JSON, or a frame `{"args": [...]}` when they hold bytes. */
function argsBody(args: unknown[]): { body: BodyInit; type: string } {
  if (hasBytes(args)) {
    const frame = encodeFrame({ args } as unknown as Message);
    if (frame !== null) return { body: frame as Uint8Array<ArrayBuffer>, type: FRAME_CONTENT_TYPE };
  }
  return { body: toJsonText(args), type: "application/json" };
}

/** One record of a client stream: JSON text, or a frame `{key: value}` when the value holds bytes. */
function streamRecord(key: "args" | "value", value: unknown): Uint8Array {
  if (hasBytes(value)) {
    const frame = encodeFrame({ [key]: value } as unknown as Message);
    if (frame !== null) return record(frame);
  }
  return record(encoder.encode(toJsonText(value)));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

class HttpRpc implements RpcTransport {
  readonly interfaces: Readonly<Record<string, { version: string; operations: readonly string[] }>>;
  private readonly calls = new Set<CallAbort>();
  private closed = false;

  constructor(
    private readonly prefix: string,
    private readonly session: SessionContext,
    private readonly described: Described,
  ) {
    const interfaces: Record<string, { version: string; operations: readonly string[] }> = {};
    for (const [name, info] of Object.entries(described)) {
      interfaces[name] = { version: info.version, operations: [...info.operations] };
    }
    this.interfaces = interfaces;
  }

  private kind(request: RpcRequest): string | undefined {
    const declared = request.spec?.stream;
    if (declared !== undefined) return declared === "both" ? "two-way" : declared;
    return this.described[request.iface]?.streams?.[request.op];
  }

  private what(request: RpcRequest): string {
    return `${request.iface}.${request.op}`;
  }

  private target(request: RpcRequest): string {
    const path = [request.iface, request.version, request.op].map(encodeURIComponent).join("/");
    return `${this.prefix}/${path}`;
  }

  private begin(request: RpcRequest): CallAbort {
    if (this.closed) throw new ConnectionClosed(`the RPC connection to ${this.prefix} is closed`);
    const abort = new CallAbort(request.call, this.what(request));
    this.calls.add(abort);
    return abort;
  }

  private end(abort: CallAbort): void {
    abort.done();
    this.calls.delete(abort);
  }

  private refuseTwoWay(request: RpcRequest): void {
    if (this.kind(request) === "two-way") {
      throw new NotFound(
        "not-found",
        `${this.what(request)} is a two-way stream, which HTTP does not carry: connect over WebSocket ({prefix}/ws on the same server)`,
        { status: 404, details: { interface: request.iface, operation: request.op, transports: ["memory", "websocket", "local"] } },
      );
    }
  }

  private headers(request: RpcRequest, type: string, accept: string): Record<string, string> {
    return {
      ...sessionHeaders(this.session),
      ...callHeaders(request.call),
      "Content-Type": type,
      Accept: accept,
    };
  }

  private failed(request: RpcRequest): (why: string) => TetherError {
    return (why) =>
      new CallMayHaveRun(
        `the connection to ${this.prefix} failed during ${this.what(request)} (${why}): the call may have run`,
        { activityId: request.call.activityId },
      );
  }

  async call(request: RpcRequest): Promise<unknown> {
    this.refuseTwoWay(request);
    const kind = this.kind(request);
    if (kind === "server") {
      throw new InvalidRequest("bad-request", `${this.what(request)} is a server stream: iterate it with stream()`, { status: 400 });
    }
    const abort = this.begin(request);
    try {
      let body: BodyInit;
      let type: string;
      if (kind === "client") ({ body, type } = await this.clientStreamBody(request, abort.signal));
      else ({ body, type } = argsBody(request.args));
      const accept = `application/json, ${FRAME_CONTENT_TYPE}`;
      const init: RequestInit = { method: "POST", headers: this.headers(request, type, accept), body };
      let response = await fetchOr(this.target(request), init, abort.controller, this.failed(request));
      if (response.status === 202 && response.headers.get("Location") !== null) {
        response = await this.poll(request, response, abort);
      }
      if (!response.ok) throw await errorOfAnswer(response, `the call ${this.what(request)}`, true);
      try {
        if ((response.headers.get("Content-Type") ?? "").startsWith(FRAME_CONTENT_TYPE)) {
          return decodeFrame(new Uint8Array(await response.arrayBuffer()))["value"];
        }
        return applyShape(JSON.parse(await response.text()), request.spec?.result);
      } catch (error) {
        if (abort.signal.aborted) throw abort.signal.reason;
        if (error instanceof TetherError) throw error;
        throw this.failed(request)(`its answer could not be read: ${error instanceof Error ? error.message : String(error)}`);
      }
    } finally {
      this.end(abort);
    }
  }

  /** A client stream's one body: its arguments, then every item, as records. */
  private async clientStreamBody(request: RpcRequest, signal: AbortSignal): Promise<{ body: BodyInit; type: string }> {
    const at = request.spec?.streamParam;
    if (at === undefined) {
      throw new InvalidRequest("bad-request", `${this.what(request)} takes a client stream: call it through a generated proxy, whose spec names the stream parameter`, { status: 400 });
    }
    const source = request.args[at] as AsyncIterable<unknown> | Iterable<unknown> | undefined;
    if (source === undefined || source === null || (typeof source !== "object" && typeof source !== "function")) {
      throw new TypeError(`argument ${at} of ${this.what(request)} must be an iterable of its items`);
    }
    const args = [...request.args];
    args[at] = null;
    const parts = [streamRecord("args", args)];
    for await (const item of source as AsyncIterable<unknown>) {
      if (signal.aborted) throw signal.reason;
      parts.push(streamRecord("value", item));
    }
    return { body: concat(parts) as Uint8Array<ArrayBuffer>, type: STREAM_CONTENT_TYPE };
  }

  /** A long-running operation's answer: polls its `Location` until it is no longer running. */
  private async poll(request: RpcRequest, accepted: Response, abort: CallAbort): Promise<Response> {
    const location = new URL(accepted.headers.get("Location") ?? "", this.prefix + "/").href;
    const headers: Record<string, string> = { Accept: `application/json, ${FRAME_CONTENT_TYPE}` };
    if (this.session.authorization !== undefined) headers["Authorization"] = this.session.authorization;
    let response = accepted;
    try {
      while (response.status === 202) {
        await response.body?.cancel();
        const seconds = Number(response.headers.get("Retry-After") ?? "1");
        await sleep(Math.max(1, Number.isFinite(seconds) ? seconds : 1) * 1000, abort.signal);
        response = await fetchOr(location, { headers }, abort.controller, this.failed(request));
        if (response.status === 404) {
          await response.body?.cancel();
          throw new CallMayHaveRun(
            `the backend no longer has the long-running call ${this.what(request)} (it dropped it or restarted): it may have run, and its reply is lost`,
            { activityId: request.call.activityId },
          );
        }
      }
      return response;
    } catch (error) {
      if (abort.signal.aborted) void fetch(location, { method: "DELETE", headers }).catch(() => undefined);
      throw error;
    }
  }

  stream(request: RpcRequest): AsyncIterable<unknown> {
    const self = this;
    return {
      [Symbol.asyncIterator]: () => self.items(request),
    };
  }

  private async *items(request: RpcRequest): AsyncGenerator<unknown, void, undefined> {
    this.refuseTwoWay(request);
    const abort = this.begin(request);
    try {
      const { body, type } = argsBody(request.args);
      const init: RequestInit = {
        method: "POST",
        headers: this.headers(request, type, `${STREAM_CONTENT_TYPE}, application/x-ndjson`),
        body,
      };
      const response = await fetchOr(this.target(request), init, abort.controller, this.failed(request));
      if (!response.ok) throw await errorOfAnswer(response, `the stream call ${this.what(request)}`, true);
      if (response.body === null) throw this.failed(request)("its answer has no body");
      const records_ = (response.headers.get("Content-Type") ?? "").startsWith(STREAM_CONTENT_TYPE)
        ? records(response.body)
        : lines(response.body);
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        let message: Message;
        try {
          next = await records_.next();
          if (next.done) break;
          message = messageOf(next.value);
        } catch (error) {
          if (abort.signal.aborted) throw abort.signal.reason;
          if (error instanceof TetherError) throw error;
          throw this.failed(request)(error instanceof Error ? error.message : String(error));
        }
        if (message.t === "item") yield applyShape(message["value"], request.spec?.result);
        else if (message.t === "result") return;
        else if (message.t === "error") {
          const wire = message["error"];
          throw errorFromWire(wire, isRecord(wire) && typeof wire["status"] === "number" ? wire["status"] : 500);
        }
      }
      throw new CallMayHaveRun(
        `the stream of ${this.what(request)} ended without its last message (the connection to ${this.prefix} broke): it may have run further`,
        { activityId: request.call.activityId },
      );
    } finally {
      // Leaving early (break, return, an error) closes the connection: the server cancels the generator.
      abort.abort(new DOMException("the stream was left", "AbortError"));
      this.end(abort);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const abort of [...this.calls]) {
      abort.abort(new ConnectionClosed(`the RPC connection to ${this.prefix} was closed while the call waited`));
    }
    this.calls.clear();
  }
}

/** Connects to the HTTP server whose RPC prefix is `url` (`http://host:port/rpc`), reading what it serves. */
export async function connectHttpRpc(url: string, options: ConnectOptions = {}): Promise<RpcTransport> {
  const prefix = httpPrefix(url);
  const session: SessionContext = {};
  if (options.sessionId !== undefined) session.sessionId = options.sessionId;
  if (options.application !== undefined) session.application = options.application;
  if (options.authorization !== undefined) session.authorization = options.authorization;
  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) throw options.signal.reason;
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const response = await fetchOr(
      `${prefix}/`,
      { headers: { ...sessionHeaders(session), Accept: "application/json" } },
      controller,
      (why) => new ConnectionClosed(`could not reach a tether backend at ${prefix} (${why}): is it running, is the URL its RPC prefix, and does it allow this page's origin (cors_origins)? A refused origin looks the same to a page: see the browser console`),
    );
    if (!response.ok) throw await errorOfAnswer(response, `GET ${prefix}/`, false);
    const text = await response.text();
    let described: unknown;
    try {
      described = JSON.parse(text);
    } catch {
      described = undefined;
    }
    if (!isRecord(described) || described["protocol"] !== 1 || !isRecord(described["interfaces"])) {
      throw new ConnectionClosed(
        `${prefix}/ did not answer what a tether backend serves (expected {"protocol": 1, "interfaces": {...}}, got ${preview(text) || "no body"}): is the URL the backend's RPC prefix (http://host:port/rpc)?`,
        { status: response.status },
      );
    }
    return new HttpRpc(prefix, session, described["interfaces"] as Described);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}
