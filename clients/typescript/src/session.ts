/**
 * The message engine of a session, over any `MessagePipe`: the page's calls
 * (RPC `call`, IPC `invoke`) with their ids, answers, cancels, deadlines,
 * progress and streams; and, on an IPC session, the backend's invokes to the
 * channels the page serves and its notifications to the page's listeners.
 */

import { applyShape, encodeFrame, toJsonText } from "./codec.js";
import type { Message } from "./codec.js";
import { rpcContext } from "./context.js";
import type { ResolvedCall, SessionContext } from "./context.js";
import {
  ApplicationError,
  CallMayHaveRun,
  ConnectionClosed,
  DeadlineExceeded,
  InvalidRequest,
  NotFound,
  TetherError,
  errorFromWire,
  preview,
} from "./errors.js";
import { DEFAULT_WINDOW, Inflow, Outflow, iteratorOf, utf8Length } from "./streams.js";
import type { StreamWindow } from "./streams.js";
import type { ConnectionState, MessagePipe, RpcRequest } from "./transport.js";
import type { OperationSpec } from "./types.js";

/** A `progress` report of a call (`tether.report_progress` in the impl). */
export interface Progress {
  done: number;
  total?: number;
  message?: string;
}

/** The last argument a served method (a handler the backend calls) gets, after its own. */
export interface HandlerContext {
  /** Aborted when the backend cancels the invoke, its deadline passes, or the session ends. */
  signal: AbortSignal;
  /** The ActivityId the backend sent, or null. */
  activityId: string | null;
  /** The backend's W3C traceparent, or null. */
  traceparent: string | null;
  /** The invoke's metadata (empty when none came). */
  metadata: Record<string, string>;
  /** The invoke's deadline in milliseconds from its arrival, or null. */
  timeoutMs: number | null;
}

/** One method a page serves: its wire spec (for bytes in its arguments) and the function. */
export interface ServedMethod {
  spec: OperationSpec | undefined;
  fn: (...args: unknown[]) => unknown;
}

/** Finds what serves a method (by wire name) of one channel. */
export type ServedChannel = (method: string) => ServedMethod | undefined;

/** Hears the notifications of one channel: wire method name and arguments. */
export type NotificationSink = (method: string, args: unknown[], activityId: string | null) => unknown;

export interface SessionOptions {
  /** Sent in every RPC call's `ctx`. */
  context?: SessionContext;
  /** Whether the pipe sends frames for messages with bytes (to measure stream items as the wire does). */
  binary?: boolean;
  /** The receive window of result streams. */
  window?: StreamWindow;
  /** Hears what the backend sent that no call takes: an `error` with id null, a malformed message, a listener that threw. */
  onError?: (error: TetherError) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface Outgoing {
  id: number;
  spec: OperationSpec | undefined;
  call: ResolvedCall;
  sent: boolean;
  outcome: Outcome | null;
  /** Told once the outcome is set (a unary call's promise) or an item came (a stream's reader). */
  notify: () => void;
  inflow: Inflow | null;
  outflow: Outflow | null;
  cleanup: (() => void)[];
}

interface Incoming {
  controller: AbortController;
  done: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isId(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function abortError(message: string): Error {
  return new DOMException(message, "AbortError");
}

/** The wire's error object of what a served method threw. */
export function wireErrorOf(error: unknown, activityId: string | null): Record<string, unknown> {
  if (error instanceof TetherError) {
    const name = error instanceof ApplicationError ? error.name : error.remoteName;
    return {
      code: error.code,
      status: error.status,
      name,
      message: error.message,
      details: error.details,
      activity_id: activityId,
    };
  }
  const name = error instanceof Error ? error.name : "Error";
  const message = error instanceof Error ? error.message : preview(error);
  return { code: "internal", status: 500, name, message, details: {}, activity_id: activityId };
}

/**
 * Runs one session's messages over `pipe`. The RPC and IPC clients build on
 * it; it owns `pipe.onmessage`, `onclose` and `onstate`.
 */
export class Session {
  /** `connected`, `reconnecting` (a transport resuming) or `closed`. */
  state: ConnectionState = "connected";
  /** Called at each change of `state`. */
  onstatechange: ((state: ConnectionState) => void) | null = null;
  /** Resolves when the session has ended, with why. */
  readonly closed: Promise<TetherError>;

  private readonly pipe: MessagePipe;
  private readonly context: SessionContext;
  private readonly binary: boolean;
  private readonly window: StreamWindow;
  private readonly onError: ((error: TetherError) => void) | undefined;
  private nextId = 1;
  private readonly outgoing = new Map<number, Outgoing>();
  private readonly incoming = new Map<number, Incoming>();
  private readonly served = new Map<string, ServedChannel>();
  private readonly sinks = new Map<string, Set<NotificationSink>>();
  private ended: TetherError | null = null;
  private resolveClosed!: (error: TetherError) => void;

  constructor(pipe: MessagePipe, options: SessionOptions = {}) {
    this.pipe = pipe;
    this.context = options.context ?? {};
    this.binary = options.binary ?? false;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.onError = options.onError;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    pipe.onmessage = (message, size) => {
      try {
        this.receive(message, size);
      } catch (error) {
        this.report(new InvalidRequest("bad-request", `could not take a message from the backend (${String(error)}): ${preview(message)}`, { status: 400, cause: error }));
      }
    };
    pipe.onclose = (error) => this.shutdown(error);
    pipe.onstate = (state) => this.setState(state);
  }

  // -- the page's calls ------------------------------------------------------

  /** An RPC call (unary or client stream): its result. */
  call(request: RpcRequest): Promise<unknown> {
    const { message, source } = this.rpcMessage(request);
    return this.unary(message, request.call, request.spec, source);
  }

  /** An RPC server- or two-way-stream call: its items, as it is iterated. */
  stream(request: RpcRequest): AsyncIterable<unknown> {
    return this.iterate(() => {
      const { message, source } = this.rpcMessage(request);
      return this.start(message, request.call, request.spec, source, true);
    });
  }

  /** An IPC invoke (unary or client stream) of `method` (wire name) on `channel`: its result. */
  invoke(channel: string, method: string, args: unknown[], call: ResolvedCall, spec: OperationSpec | undefined): Promise<unknown> {
    const { message, source } = this.invokeMessage(channel, method, args, call, spec);
    return this.unary(message, call, spec, source);
  }

  /** An IPC server- or two-way-stream invoke: its items, as it is iterated. */
  invokeStream(channel: string, method: string, args: unknown[], call: ResolvedCall, spec: OperationSpec | undefined): AsyncIterable<unknown> {
    return this.iterate(() => {
      const { message, source } = this.invokeMessage(channel, method, args, call, spec);
      return this.start(message, call, spec, source, true);
    });
  }

  /** Sends a notification (never answered). */
  async notify(channel: string, method: string, args: unknown[], activityId?: string): Promise<void> {
    if (this.ended !== null) throw this.closedError(false);
    const message: Message = { t: "notify", channel, method, args };
    if (activityId !== undefined) message["activity_id"] = activityId;
    await this.pipe.send(message);
  }

  // -- what the page serves and hears ----------------------------------------

  /** Serves `channel` to the backend's invokes; returns a function that stops serving it. */
  serve(channel: string, find: ServedChannel): () => void {
    if (this.served.has(channel)) {
      throw new Error(`the channel ${JSON.stringify(channel)} is served already on this session: stop the first serve() before serving it again`);
    }
    this.served.set(channel, find);
    return () => {
      if (this.served.get(channel) === find) this.served.delete(channel);
    };
  }

  /** Hears the notifications of `channel`; returns a function that stops hearing them. */
  listen(channel: string, sink: NotificationSink): () => void {
    let sinks = this.sinks.get(channel);
    if (sinks === undefined) {
      sinks = new Set();
      this.sinks.set(channel, sinks);
    }
    sinks.add(sink);
    return () => {
      sinks.delete(sink);
    };
  }

  /** Ends the session: calls still waiting reject with `ConnectionClosed`. */
  async close(reason = "the page closed the session"): Promise<void> {
    this.shutdown(new ConnectionClosed(reason));
    await this.pipe.close(reason);
  }

  // -- internals: outgoing ---------------------------------------------------

  private rpcMessage(request: RpcRequest): { message: Message; source: unknown } {
    const { args, source } = this.splitStream(request.args, request.spec);
    const message: Message = {
      t: "call",
      id: 0,
      iface: request.iface,
      ver: request.version,
      op: request.op,
      args,
      ctx: rpcContext(request.call, this.context),
    };
    if (request.call.timeoutMs !== undefined) message["timeout_ms"] = request.call.timeoutMs;
    return { message, source };
  }

  private invokeMessage(channel: string, method: string, rawArgs: unknown[], call: ResolvedCall, spec: OperationSpec | undefined): { message: Message; source: unknown } {
    const { args, source } = this.splitStream(rawArgs, spec);
    const message: Message = { t: "invoke", id: 0, channel, method, args, activity_id: call.activityId, traceparent: call.traceparent };
    if (call.timeoutMs !== undefined) message["timeout_ms"] = call.timeoutMs;
    if (call.metadata !== undefined) message["metadata"] = call.metadata;
    if (spec === undefined) message["stream"] = false; // untyped: one value back, no credit
    return { message, source };
  }

  private splitStream(args: unknown[], spec: OperationSpec | undefined): { args: unknown[]; source: unknown } {
    if (!Array.isArray(args)) throw new TypeError("the arguments of a call must be an array");
    const at = spec?.streamParam;
    if ((spec?.stream === "client" || spec?.stream === "both") && at !== undefined) {
      const copy = [...args];
      const source = copy[at];
      copy[at] = null;
      return { args: copy, source };
    }
    return { args, source: undefined };
  }

  private unary(message: Message, call: ResolvedCall, spec: OperationSpec | undefined, source: unknown): Promise<unknown> {
    let entry: Outgoing;
    try {
      entry = this.start(message, call, spec, source, false);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        const outcome = entry.outcome as Outcome;
        if (outcome.ok) resolve(outcome.value);
        else reject(outcome.error);
      };
      if (entry.outcome !== null) settle();
      else entry.notify = settle;
    });
  }

  /** Registers and sends a call; its outcome lands in the returned entry. */
  private start(message: Message, call: ResolvedCall, spec: OperationSpec | undefined, source: unknown, streamsResult: boolean): Outgoing {
    const id = this.nextId++;
    message["id"] = id;
    const entry: Outgoing = {
      id,
      spec,
      call,
      sent: false,
      outcome: null,
      notify: () => {},
      inflow: streamsResult ? new Inflow(this.window) : null,
      outflow: source !== undefined ? new Outflow() : null,
      cleanup: [],
    };
    if (this.ended !== null) {
      entry.outcome = { ok: false, error: this.closedError(false) };
      return entry;
    }
    const signal = call.signal;
    if (signal?.aborted) {
      entry.outcome = { ok: false, error: signal.reason };
      return entry;
    }
    this.outgoing.set(id, entry);
    if (signal !== undefined) {
      const onAbort = (): void => this.abandon(entry, signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      entry.cleanup.push(() => signal.removeEventListener("abort", onAbort));
    }
    if (call.timeoutMs !== undefined) {
      const ms = call.timeoutMs;
      const timer = setTimeout(() => {
        const error = new DeadlineExceeded("deadline-exceeded", `the call's deadline (timeoutMs ${ms}) passed before the backend answered; it was cancelled`, {
          status: 504,
          activityId: call.activityId,
        });
        this.abandon(entry, error);
      }, Math.min(ms, 2 ** 31 - 1));
      entry.cleanup.push(() => clearTimeout(timer));
    }
    entry.sent = true;
    this.sendSafely(message).catch((error: unknown) => {
      entry.sent = false; // it never left: the backend did not run it
      this.finish(entry, { ok: false, error: error instanceof TetherError ? error : new ConnectionClosed(`the call could not be sent: ${String(error)}`, { cause: error }) });
    });
    if (entry.inflow !== null) {
      const grant = entry.inflow.initialGrant();
      this.sendQuietly({ t: "credit", id, items: grant.items, bytes: grant.bytes });
    }
    if (entry.outflow !== null) void this.pump(entry, source);
    return entry;
  }

  /** The page gave up on a call (abort, deadline, a stream left): cancel it on the backend. */
  private abandon(entry: Outgoing, error: unknown): void {
    if (entry.outcome !== null) return;
    this.sendQuietly({ t: "cancel", id: entry.id });
    entry.inflow?.buffered.splice(0);
    this.finish(entry, { ok: false, error });
  }

  private finish(entry: Outgoing, outcome: Outcome): void {
    if (entry.outcome !== null) return;
    entry.outcome = outcome;
    this.outgoing.delete(entry.id);
    for (const undo of entry.cleanup) undo();
    entry.outflow?.wake();
    entry.notify();
  }

  /** Sends the argument stream of `entry` within the credit the backend grants. */
  private async pump(entry: Outgoing, source: unknown): Promise<void> {
    const outflow = entry.outflow as Outflow;
    let iterator: AsyncIterator<unknown> | Iterator<unknown> | null = null;
    let finished = false;
    try {
      iterator = iteratorOf(source as Iterable<unknown>);
      for (;;) {
        while (entry.outcome === null && !outflow.maySend()) await outflow.wait();
        if (entry.outcome !== null) return;
        const step = await iterator.next();
        if (entry.outcome !== null) return;
        if (step.done === true) {
          finished = true;
          await this.pipe.send({ t: "end", id: entry.id });
          return;
        }
        outflow.spend(await this.sendMeasured({ t: "send", id: entry.id, value: step.value }));
      }
    } catch (error) {
      finished = true;
      this.abandon(entry, error);
    } finally {
      if (!finished && iterator !== null && typeof iterator.return === "function") {
        try {
          await iterator.return();
        } catch {
          // the source's own cleanup failed: the call has its outcome already
        }
      }
    }
  }

  private iterate(start: () => Outgoing): AsyncIterable<unknown> {
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<unknown> => {
        const entry = start();
        const inflow = entry.inflow as Inflow;
        let left = false;
        const waiters: (() => void)[] = [];
        entry.notify = () => {
          for (const wake of waiters.splice(0)) wake();
        };
        return {
          next: async (): Promise<IteratorResult<unknown>> => {
            for (;;) {
              if (left) return { done: true, value: undefined };
              if (inflow.buffered.length > 0) {
                const value = inflow.take();
                const grant = inflow.grantDue();
                if (grant !== null && entry.outcome === null) {
                  this.sendQuietly({ t: "credit", id: entry.id, items: grant.items, bytes: grant.bytes });
                }
                try {
                  return { done: false, value: applyShape(value, entry.spec?.result) };
                } catch (error) {
                  this.abandon(entry, error);
                  throw error;
                }
              }
              if (entry.outcome !== null) {
                if (!entry.outcome.ok) throw entry.outcome.error;
                return { done: true, value: undefined };
              }
              await new Promise<void>((resolve) => waiters.push(resolve));
            }
          },
          return: async (): Promise<IteratorResult<unknown>> => {
            left = true;
            this.abandon(entry, abortError("the stream's iteration ended"));
            return { done: true, value: undefined };
          },
        };
      },
    };
  }

  private async sendMeasured(message: Message): Promise<number> {
    const size = await this.pipe.send(message);
    return typeof size === "number" ? size : this.measure(message);
  }

  /** A message's size as the wire counts it (when the pipe did not say). */
  private measure(message: Message): number {
    const frame = this.binary ? encodeFrame(message) : null;
    return frame !== null ? frame.length : utf8Length(toJsonText(message));
  }

  /** `pipe.send`, a synchronous throw (a value toJsonText refuses) as a rejection. */
  private sendSafely(message: Message): Promise<unknown> {
    try {
      return this.pipe.send(message);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private sendQuietly(message: Message): void {
    if (this.ended !== null) return;
    this.sendSafely(message).catch(() => {
      // the pipe ended: the close settles what waits
    });
  }

  // -- internals: incoming ---------------------------------------------------

  private receive(message: Message, size: number | undefined): void {
    if (!isRecord(message) || typeof message.t !== "string") {
      this.report(new InvalidRequest("bad-request", `the backend sent a message that is not an object with a "t": ${preview(message)}`, { status: 400 }));
      return;
    }
    switch (message.t) {
      case "result":
      case "error":
      case "progress":
      case "item":
      case "ready":
        this.toCall(message, size);
        return;
      case "invoke":
        this.onInvoke(message);
        return;
      case "cancel":
        this.onCancel(message);
        return;
      case "notify":
        this.onNotify(message);
        return;
      case "credit":
      case "send":
      case "end":
        return; // for a stream of a method the page serves: none is (their invokes are refused)
      default:
        this.report(new InvalidRequest("bad-request", `the backend sent a message this client does not know (t ${JSON.stringify(message.t)}): ${preview(message)}`, { status: 400 }));
    }
  }

  private toCall(message: Message, size: number | undefined): void {
    const id = message["id"];
    if (message.t === "error" && id === null) {
      this.report(errorFromWire(message["error"]));
      return;
    }
    if (!isId(id)) {
      this.report(new InvalidRequest("bad-request", `the backend sent a ${message.t} without a valid id: ${preview(message)}`, { status: 400 }));
      return;
    }
    const entry = this.outgoing.get(id);
    if (entry === undefined) return; // finished already: late messages are dropped
    switch (message.t) {
      case "result": {
        let outcome: Outcome;
        try {
          outcome = { ok: true, value: entry.inflow !== null ? undefined : applyShape(message["value"], entry.spec?.result) };
        } catch (error) {
          outcome = { ok: false, error };
        }
        this.finish(entry, outcome);
        return;
      }
      case "error":
        this.finish(entry, { ok: false, error: errorFromWire(message["error"]) });
        return;
      case "progress":
        this.onProgress(entry, message);
        return;
      case "item": {
        const inflow = entry.inflow;
        if (inflow === null || !inflow.put(message["value"], size ?? this.measure(message))) {
          const why = inflow === null ? "for a call that does not stream its result" : "past the credit this client granted";
          this.abandon(entry, new InvalidRequest("bad-request", `the backend sent a stream item ${why} (docs/wire.md, flow control)`, { status: 400, activityId: entry.call.activityId }));
          return;
        }
        entry.notify();
        return;
      }
      case "ready": {
        const items = message["items"];
        const bytes = message["bytes"];
        if (entry.outflow !== null && typeof items === "number" && typeof bytes === "number") entry.outflow.grant(items, bytes);
        return;
      }
    }
  }

  private onProgress(entry: Outgoing, message: Message): void {
    const listener = entry.call.onProgress;
    const done = message["done"];
    if (listener === undefined || typeof done !== "number") return;
    const progress: Progress = { done };
    if (typeof message["total"] === "number") progress.total = message["total"];
    if (typeof message["message"] === "string") progress.message = message["message"];
    try {
      listener(progress);
    } catch (error) {
      this.report(new TetherError("internal", `an onProgress callback threw: ${String(error)}`, { cause: error }));
    }
  }

  private onNotify(message: Message): void {
    const { channel, method, args } = message;
    if (typeof channel !== "string" || typeof method !== "string" || !Array.isArray(args)) {
      this.report(new InvalidRequest("bad-request", `the backend sent a malformed notify: ${preview(message)}`, { status: 400 }));
      return;
    }
    const activityId = typeof message["activity_id"] === "string" ? message["activity_id"] : null;
    for (const sink of [...(this.sinks.get(channel) ?? [])]) {
      const failed = (error: unknown): void =>
        this.report(new TetherError("internal", `a listener of ${channel}.${method} threw: ${String(error)}`, { cause: error }));
      try {
        const returned = sink(method, args, activityId);
        if (returned instanceof Promise) returned.catch(failed);
      } catch (error) {
        failed(error);
      }
    }
  }

  private onCancel(message: Message): void {
    const id = message["id"];
    const running = isId(id) ? this.incoming.get(id) : undefined;
    if (running === undefined) return;
    this.endIncoming(id as number, running, abortError("the backend cancelled the invoke"));
  }

  private endIncoming(id: number, running: Incoming, reason: unknown): void {
    running.done = true;
    clearTimeout(running.timer);
    this.incoming.delete(id);
    running.controller.abort(reason);
  }

  private onInvoke(message: Message): void {
    const { id, channel, method, args } = message;
    if (!isId(id) || typeof channel !== "string" || typeof method !== "string" || !Array.isArray(args)) {
      const error = new InvalidRequest("bad-request", `malformed invoke: expected id (an integer >= 0), channel, method (strings) and args (an array), got ${preview(message)}`, { status: 400 });
      this.sendQuietly({ t: "error", id: isId(id) ? id : null, error: wireErrorOf(error, null) });
      return;
    }
    const activityId = typeof message["activity_id"] === "string" ? message["activity_id"] : null;
    const answerError = (error: TetherError): void => this.sendQuietly({ t: "error", id, error: wireErrorOf(error, activityId) });
    const find = this.served.get(channel);
    const served = find?.(method);
    if (served === undefined) {
      const what = find === undefined ? `this page serves no channel ${JSON.stringify(channel)}` : `the channel ${JSON.stringify(channel)} of this page has no method ${JSON.stringify(method)}`;
      answerError(new NotFound("not-found", `${what}: serve it with session.serve(ref, handler)`, { status: 404 }));
      return;
    }
    if (served.spec?.stream !== undefined) {
      answerError(new InvalidRequest("bad-request", `${channel}.${method} streams, and this browser client serves no stream methods yet`, { status: 400 }));
      return;
    }
    if (this.incoming.has(id)) {
      answerError(new InvalidRequest("bad-request", `invoke ${id} is running already: an id is unique among the invokes waiting for an answer`, { status: 400 }));
      return;
    }
    const timeoutMs = isId(message["timeout_ms"]) ? message["timeout_ms"] : null;
    const running: Incoming = { controller: new AbortController(), done: false, timer: undefined };
    this.incoming.set(id, running);
    if (timeoutMs !== null) {
      running.timer = setTimeout(() => {
        const error = new DeadlineExceeded("deadline-exceeded", `${channel}.${method} did not finish within the invoke's deadline of ${timeoutMs} ms`, { status: 504, activityId });
        this.endIncoming(id, running, error);
        answerError(error);
      }, Math.min(timeoutMs, 2 ** 31 - 1));
    }
    const metadata = isRecord(message["metadata"]) ? (message["metadata"] as Record<string, string>) : {};
    const context: HandlerContext = {
      signal: running.controller.signal,
      activityId,
      traceparent: typeof message["traceparent"] === "string" ? message["traceparent"] : null,
      metadata,
      timeoutMs,
    };
    const spec = served.spec;
    const count = Math.max(args.length, spec?.params.length ?? 0);
    new Promise((resolve) => {
      const shaped: unknown[] = [];
      for (let i = 0; i < count; i++) shaped.push(applyShape(args[i], spec?.args?.[i]));
      resolve(served.fn(...shaped, context));
    }).then(
      (value) => {
        if (running.done) return;
        this.endIncoming(id, running, abortError("the invoke finished"));
        if (this.ended !== null) return;
        this.sendSafely({ t: "result", id, value: value === undefined ? null : value }).catch((error: unknown) => {
          if (this.ended === null) this.sendQuietly({ t: "error", id, error: wireErrorOf(error, activityId) });
        });
      },
      (error: unknown) => {
        if (running.done) return;
        this.endIncoming(id, running, abortError("the invoke failed"));
        this.sendQuietly({ t: "error", id, error: wireErrorOf(error, activityId) });
      },
    );
  }

  // -- internals: the end ----------------------------------------------------

  private report(error: TetherError): void {
    try {
      this.onError?.(error);
    } catch {
      // an onError that throws must not break the session
    }
  }

  private setState(state: ConnectionState): void {
    if (this.state === state || this.state === "closed") return;
    this.state = state;
    try {
      this.onstatechange?.(state);
    } catch (error) {
      this.report(new TetherError("internal", `onstatechange threw: ${String(error)}`, { cause: error }));
    }
  }

  private closedError(sent: boolean): ConnectionClosed {
    const why = this.ended as TetherError;
    const closeCode = why instanceof ConnectionClosed ? why.closeCode : null;
    if (sent) {
      return new CallMayHaveRun(`the connection closed after the call was sent, so the backend may or may not have run it (${why.message})`, { cause: why, closeCode });
    }
    return new ConnectionClosed(`the session has ended: ${why.message}`, { cause: why, closeCode });
  }

  private shutdown(error: TetherError): void {
    if (this.ended !== null) return;
    this.ended = error;
    for (const entry of [...this.outgoing.values()]) {
      this.finish(entry, { ok: false, error: this.closedError(entry.sent) });
    }
    for (const [id, running] of [...this.incoming]) this.endIncoming(id, running, error);
    this.setState("closed");
    this.resolveClosed(error);
  }
}
