/**
 * RPC from the page: `connectRpc(url, options)` picks the transport by the
 * URL's scheme (ws/wss: one WebSocket, calls multiplexed; http/https: one
 * fetch per call), checks the interfaces' versions, and hands out typed
 * proxies.
 */

import { resolveCall } from "./context.js";
import type { CallOptions, ResolvedCall, SessionContext } from "./context.js";
import { IncompatibleVersion, NotFound } from "./errors.js";
import type { TetherError } from "./errors.js";
import { connectHttpRpc } from "./rpc_http.js";
import { Session } from "./session.js";
import type { ConnectOptions, RpcRequest, RpcTransport } from "./transport.js";
import type { OperationSpec, RpcInterfaceRef } from "./types.js";
import { isVersionCompatible } from "./versions.js";
import { openWebSocket } from "./ws.js";
import type { WebSocketConstructor } from "./ws.js";

export interface RpcConnectOptions extends ConnectOptions {
  /** The interfaces this page calls: each is checked against what the backend serves. */
  interfaces?: readonly RpcInterfaceRef<unknown>[];
  /** The WebSocket class (the global `WebSocket` when left out). */
  WebSocket?: WebSocketConstructor;
  /** Hears what the backend sent that no call takes (an `error` with id null, a malformed message). */
  onError?: (error: TetherError) => void;
}

/** Which transport a URL picks: `ws`/`wss` or `http`/`https`. */
export function schemeOf(url: string): "ws" | "http" {
  let parsed: URL;
  try {
    parsed = new URL(url, (globalThis as { location?: { href: string } }).location?.href);
  } catch {
    throw new TypeError(`expected a URL such as ws://host:port/rpc/ws or http://host:port/rpc, got ${JSON.stringify(url)}`);
  }
  if (parsed.protocol === "ws:" || parsed.protocol === "wss:") return "ws";
  if (parsed.protocol === "http:" || parsed.protocol === "https:") return "http";
  throw new TypeError(`expected a ws:, wss:, http: or https: URL, got ${JSON.stringify(url)}`);
}

/**
 * Checks that the backend serves each of `wanted` at a version this page may
 * use (the README's "Versions" rules); the error says both versions and what to do.
 */
export function checkInterfaces(
  served: Readonly<Record<string, { version: string }>>,
  wanted: readonly { name: string; version: string }[],
  what = "interface",
): void {
  for (const ref of wanted) {
    const entry = served[ref.name];
    if (entry === undefined) {
      const names = Object.keys(served).sort();
      throw new NotFound(
        "not-found",
        `the backend does not serve the ${what} ${ref.name} (it serves ${names.length > 0 ? names.join(", ") : "none"}): ` +
          `register it on the backend, or check the URL`,
        { status: 404, details: { name: ref.name } },
      );
    }
    if (!isVersionCompatible(entry.version, ref.version)) {
      throw new IncompatibleVersion(
        "incompatible-version",
        `the backend serves ${ref.name} ${entry.version}, and this page was built against ${ref.version}, which it cannot call: ` +
          `regenerate the page's stubs from the backend's interface (tether codegen typescript) and rebuild, ` +
          `or run a backend that serves a compatible version`,
        { status: 403, details: { name: ref.name, backend: entry.version, frontend: ref.version } },
      );
    }
  }
}

/**
 * Resolves a call's options and runs it: a bad option rejects the promise of a
 * unary call, and throws at once for a stream (which has no promise).
 */
export function dispatch(
  options: CallOptions | undefined,
  spec: OperationSpec | undefined,
  run: (call: ResolvedCall) => Promise<unknown> | AsyncIterable<unknown>,
): Promise<unknown> | AsyncIterable<unknown> {
  let call: ResolvedCall;
  try {
    call = resolveCall(options);
  } catch (error) {
    if (streamsResult(spec)) throw error;
    return Promise.reject(error);
  }
  return run(call);
}

/**
 * A stub method: positional arguments, then `CallOptions`. Trailing arguments
 * left `undefined` (optional parameters skipped to reach the options) are not
 * sent, so the backend uses their defaults rather than refusing a `null`.
 */
export function splitOptions(spec: OperationSpec, args: unknown[]): { args: unknown[]; options: CallOptions | undefined } {
  let options: CallOptions | undefined;
  let positional = args;
  if (args.length > spec.params.length) {
    const last = args[args.length - 1];
    if (args.length === spec.params.length + 1 && (last === undefined || (typeof last === "object" && last !== null && !Array.isArray(last)))) {
      positional = args.slice(0, -1);
      options = last as CallOptions | undefined;
    } else {
      throw new TypeError(`${spec.name} takes ${spec.params.length} argument(s) (${spec.params.join(", ")}) and options, got ${args.length}`);
    }
  }
  let end = positional.length;
  while (end > 0 && positional[end - 1] === undefined) end--;
  return { args: end === positional.length ? positional : positional.slice(0, end), options };
}

/** Whether an operation returns a stream of items (server or two-way). */
export function streamsResult(spec: OperationSpec | undefined): boolean {
  return spec?.stream === "server" || spec?.stream === "both";
}

/** A connection to an RPC backend: typed proxies, untyped calls. */
export class RpcClient {
  private readonly transport: RpcTransport;

  constructor(transport: RpcTransport) {
    this.transport = transport;
  }

  /** What the backend serves: interface name -> its version and operations. */
  get interfaces(): Readonly<Record<string, { version: string; operations: readonly string[] }>> {
    return this.transport.interfaces;
  }

  /** A typed proxy of `ref`: one camelCase method per operation. */
  proxy<T>(ref: RpcInterfaceRef<T>): T {
    checkInterfaces(this.transport.interfaces, [ref]);
    const proxy: Record<string, (...args: unknown[]) => unknown> = {};
    for (const [method, spec] of Object.entries(ref.operations)) {
      proxy[method] = (...raw: unknown[]) => {
        const { args, options } = splitOptions(spec, raw);
        return this.send(ref.name, ref.version, spec.name, args, options, spec);
      };
    }
    return Object.freeze(proxy) as T;
  }

  /** An untyped call of `op` (its wire name); a stream operation needs its `spec` (then it returns an AsyncIterable). */
  call(iface: string, version: string, op: string, args: unknown[], options?: CallOptions, spec?: OperationSpec): Promise<unknown> | AsyncIterable<unknown> {
    return this.send(iface, version, op, args, options, spec);
  }

  /** Closes the connection; calls still waiting reject with `ConnectionClosed`. */
  close(): Promise<void> {
    return this.transport.close();
  }

  private send(iface: string, version: string, op: string, args: unknown[], options: CallOptions | undefined, spec: OperationSpec | undefined): Promise<unknown> | AsyncIterable<unknown> {
    return dispatch(options, spec, (call) => {
      const request: RpcRequest = { iface, version, op, args, call, spec };
      return streamsResult(spec) ? this.transport.stream(request) : this.transport.call(request);
    });
  }
}

/** RPC over one WebSocket: a session whose welcome lists what the backend serves. */
async function connectWebSocketRpc(url: string, options: RpcConnectOptions): Promise<RpcTransport> {
  const hello: Record<string, unknown> = { t: "hello", protocol: 1, mode: "rpc" };
  if (options.sessionId !== undefined) hello["session_id"] = options.sessionId;
  if (options.application !== undefined) hello["application"] = options.application;
  const socketOptions: Parameters<typeof openWebSocket>[2] = {};
  if (options.signal !== undefined) socketOptions.signal = options.signal;
  if (options.WebSocket !== undefined) socketOptions.WebSocket = options.WebSocket;
  const { welcome, pipe } = await openWebSocket(url, { t: "hello", ...hello }, socketOptions);
  const context: SessionContext = {};
  if (options.sessionId !== undefined) context.sessionId = options.sessionId;
  if (options.application !== undefined) context.application = options.application;
  if (options.authorization !== undefined) context.authorization = options.authorization;
  const sessionOptions: ConstructorParameters<typeof Session>[1] = { context, binary: welcome.binary === true };
  if (options.onError !== undefined) sessionOptions.onError = options.onError;
  const session = new Session(pipe, sessionOptions);
  return {
    interfaces: welcome.interfaces,
    call: (request) => session.call(request),
    stream: (request) => session.stream(request),
    close: () => session.close(),
  };
}

/**
 * Connects to an RPC backend: `ws(s)://host:port/rpc/ws` (one WebSocket) or
 * `http(s)://host:port/rpc` (one fetch per call), then checks that it serves
 * `options.interfaces` at compatible versions (NotFound, IncompatibleVersion).
 */
export async function connectRpc(url: string, options: RpcConnectOptions = {}): Promise<RpcClient> {
  const scheme = schemeOf(url);
  const transport = scheme === "ws" ? await connectWebSocketRpc(url, options) : await connectHttpRpc(url, options);
  try {
    checkInterfaces(transport.interfaces, options.interfaces ?? []);
  } catch (error) {
    await transport.close().catch(() => {});
    throw error;
  }
  return new RpcClient(transport);
}
