/**
 * IPC from the page: `connectIpc(url, options)` opens a session with a
 * tether IPC backend (over a WebSocket, or over HTTP: POSTs and an event
 * stream), then the page calls the backend's channels (`proxy`), hears its
 * notifications (`listen`) and answers its calls (`serve`).
 */

import { applyShape } from "./codec.js";
import type { CallOptions } from "./context.js";
import type { TetherError } from "./errors.js";
import { openHttpIpc } from "./ipc_http.js";
import { checkInterfaces, dispatch, schemeOf, splitOptions, streamsResult } from "./rpc.js";
import { Session } from "./session.js";
import type { ServedMethod } from "./session.js";
import type { ConnectOptions, ConnectionState, MessagePipe, Welcome } from "./transport.js";
import type { IpcChannelRef, NotificationRef, OperationSpec } from "./types.js";
import { openWebSocket } from "./ws.js";
import type { WebSocketConstructor } from "./ws.js";

export interface IpcConnectOptions extends ConnectOptions {
  /** The backend's channels this page calls: each is checked at connect (NotFound, IncompatibleVersion). */
  channels?: readonly IpcChannelRef<unknown, unknown>[];
  /** The WebSocket class (the global `WebSocket` when left out). */
  WebSocket?: WebSocketConstructor;
  /** Hears what no call takes: an `error` with id null, a malformed message, a listener that threw. */
  onError?: (error: TetherError) => void;
}

function byWireName(methods: Readonly<Record<string, OperationSpec>>): Map<string, [string, OperationSpec]> {
  const map = new Map<string, [string, OperationSpec]>();
  for (const [camel, spec] of Object.entries(methods)) map.set(spec.name, [camel, spec]);
  return map;
}

/** An IPC session with the backend. */
export class IpcSession {
  /** The session's id, made by the backend. */
  readonly sessionId: string;
  /** The channels the backend serves: name -> version. */
  readonly channels: Readonly<Record<string, string>>;
  /** Resolves when the session has ended, with why. */
  readonly closed: Promise<TetherError>;
  private readonly session: Session;

  constructor(session: Session, welcome: Welcome) {
    this.session = session;
    this.sessionId = welcome.session_id;
    this.channels = welcome.channels;
    this.closed = session.closed;
  }

  /** `connected`, `reconnecting` or `closed`. */
  get state(): ConnectionState {
    return this.session.state;
  }

  /** Called at each change of `state`. */
  get onstatechange(): ((state: ConnectionState) => void) | null {
    return this.session.onstatechange;
  }

  set onstatechange(listener: ((state: ConnectionState) => void) | null) {
    this.session.onstatechange = listener;
  }

  /** A typed proxy of the backend's channel `ref`: one camelCase method per method. */
  proxy<T>(ref: IpcChannelRef<T, unknown>): T {
    checkChannels(this.channels, [ref]);
    const proxy: Record<string, (...args: unknown[]) => unknown> = {};
    for (const [method, spec] of Object.entries(ref.methods)) {
      proxy[method] = (...raw: unknown[]) => {
        const { args, options } = splitOptions(spec, raw);
        return this.send(ref.channel, spec.name, args, options, spec);
      };
    }
    return Object.freeze(proxy) as T;
  }

  /**
   * Hears the backend's notifications of `ref` with `listener` (an object of
   * camelCase methods, each optional); returns a function that stops it.
   */
  listen<L>(ref: NotificationRef<L>, listener: L): () => void {
    if (typeof listener !== "object" || listener === null) throw new TypeError(`listen(${ref.channel}, listener): the listener must be an object of methods`);
    const methods = byWireName(ref.methods);
    return this.session.listen(ref.channel, (method, args) => {
      const found = methods.get(method);
      if (found === undefined) return; // a method this page's stubs do not know: dropped, as the backend drops them
      const [camel, spec] = found;
      const fn = (listener as Record<string, unknown>)[camel];
      if (typeof fn !== "function") return;
      const shaped = args.map((value, index) => applyArgShape(value, spec, index));
      return fn.apply(listener, shaped) as unknown; // a rejected promise is reported like a throw
    });
  }

  /**
   * Answers the backend's invokes of channel `ref` with `handler` (an object
   * of camelCase methods; each gets its arguments, then a `HandlerContext`
   * whose `signal` aborts when the backend cancels); returns a function that stops serving.
   */
  serve<H>(ref: IpcChannelRef<unknown, H>, handler: H): () => void {
    if (typeof handler !== "object" || handler === null) throw new TypeError(`serve(${ref.channel}, handler): the handler must be an object of methods`);
    const methods = byWireName(ref.methods);
    return this.session.serve(ref.channel, (method): ServedMethod | undefined => {
      const found = methods.get(method);
      if (found === undefined) return undefined;
      const [camel, spec] = found;
      const fn = (handler as Record<string, unknown>)[camel];
      if (typeof fn !== "function") return undefined;
      return { spec, fn: (...args: unknown[]) => fn.apply(handler, args) as unknown };
    });
  }

  /** An untyped invoke of `method` (its wire name) on `channel`; the backend answers it with one value. */
  invoke(channel: string, method: string, args: unknown[], options?: CallOptions): Promise<unknown> {
    return this.send(channel, method, args, options, undefined) as Promise<unknown>;
  }

  /** Sends a notification to the backend's listeners of `channel`. */
  notify(channel: string, method: string, args: unknown[], options: { activityId?: string } = {}): Promise<void> {
    return this.session.notify(channel, method, args, options.activityId);
  }

  /** Ends the session (calls still waiting reject with `ConnectionClosed`). */
  close(): Promise<void> {
    return this.session.close();
  }

  private send(channel: string, method: string, args: unknown[], options: CallOptions | undefined, spec: OperationSpec | undefined): Promise<unknown> | AsyncIterable<unknown> {
    return dispatch(options, spec, (call) =>
      streamsResult(spec) ? this.session.invokeStream(channel, method, args, call, spec) : this.session.invoke(channel, method, args, call, spec),
    );
  }
}

function applyArgShape(value: unknown, spec: OperationSpec, index: number): unknown {
  return applyShape(value, spec.args?.[index]);
}

/** Checks that the backend serves each channel of `wanted` at a compatible version. */
export function checkChannels(served: Readonly<Record<string, string>>, wanted: readonly IpcChannelRef<unknown, unknown>[]): void {
  const versions: Record<string, { version: string }> = {};
  for (const [name, version] of Object.entries(served)) versions[name] = { version };
  checkInterfaces(versions, wanted.map((ref) => ({ name: ref.channel, version: ref.version })), "channel");
}

/** The IPC `hello` of `options`. */
export function ipcHello(options: IpcConnectOptions): { t: string } & Record<string, unknown> {
  const channels: Record<string, string> = {};
  for (const ref of options.channels ?? []) {
    if (ref?.kind !== "ipc") throw new TypeError("connectIpc: options.channels holds the backend's IPC channels (refs of kind \"ipc\"); notification channels are heard with session.listen");
    channels[ref.channel] = ref.version;
  }
  const hello: { t: string } & Record<string, unknown> = { t: "hello", protocol: 1, mode: "ipc", channels };
  if (options.application !== undefined) hello["application"] = options.application;
  if (options.authorization !== undefined) hello["authorization"] = options.authorization;
  return hello;
}

/**
 * Opens an IPC session: `ws(s)://host:port/rpc/ws` (one WebSocket) or
 * `http(s)://host:port/rpc` (POSTs and an event stream). The backend checks
 * `options.channels` (NotFound, IncompatibleVersion); so does this client.
 */
export async function connectIpc(url: string, options: IpcConnectOptions = {}): Promise<IpcSession> {
  const scheme = schemeOf(url);
  const hello = ipcHello(options);
  let opened: { welcome: Welcome; pipe: MessagePipe };
  if (scheme === "ws") {
    const socketOptions: Parameters<typeof openWebSocket>[2] = {};
    if (options.signal !== undefined) socketOptions.signal = options.signal;
    if (options.WebSocket !== undefined) socketOptions.WebSocket = options.WebSocket;
    opened = await openWebSocket(url, hello, socketOptions);
  } else {
    opened = await openHttpIpc(url, hello, options);
  }
  const { welcome, pipe } = opened;
  const sessionOptions: ConstructorParameters<typeof Session>[1] = { binary: welcome.binary === true };
  if (options.onError !== undefined) sessionOptions.onError = options.onError;
  const session = new Session(pipe, sessionOptions);
  try {
    checkChannels(welcome.channels, options.channels ?? []);
  } catch (error) {
    await session.close().catch(() => {});
    throw error;
  }
  return new IpcSession(session, welcome);
}
