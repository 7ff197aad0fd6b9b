/**
 * The seams between the sessions (RPC and IPC, transport-agnostic) and the
 * transports that carry them (WebSocket, HTTP).
 */

import type { Message } from "./codec.js";
import type { ResolvedCall, SessionContext } from "./context.js";
import type { TetherError } from "./errors.js";
import type { OperationSpec } from "./types.js";

/** How a connection stands; `reconnecting` while a transport resumes after a drop. */
export type ConnectionState = "connected" | "reconnecting" | "closed";

/**
 * A two-way pipe of messages after the handshake: a WebSocket, or an IPC
 * session over HTTP (POSTs one way, the event stream the other).
 */
export interface MessagePipe {
  /**
   * Sends one message (it may hold `Uint8Array` values); messages go in the
   * order sent. Resolves with the message's size on the wire when the pipe
   * knows it (stream credit counts it). Rejects with `ConnectionClosed` once
   * the pipe has ended.
   */
  send(message: Message): Promise<number | void>;
  /** Set by the session: each message from the backend, in order, with its size on the wire when the pipe knows it. */
  onmessage: ((message: Message, size?: number) => void) | null;
  /** Set by the session: called once, when the pipe has ended for good (a resume, if any, failed), with why. */
  onclose: ((error: TetherError) => void) | null;
  /** Set by the session: each change of state. */
  onstate: ((state: ConnectionState) => void) | null;
  /** Ends the pipe and its session (WebSocket: `bye` then close; HTTP: `DELETE`). */
  close(reason?: string): Promise<void>;
}

/** The backend's `welcome`, as the sessions read it. */
export interface Welcome {
  session_id: string;
  channels: Record<string, string>;
  interfaces: Record<string, { version: string; operations: string[] }>;
  binary?: boolean;
}

/** What a client says about itself when it connects. */
export interface ConnectOptions extends SessionContext {
  /** Aborts connecting. */
  signal?: AbortSignal;
}

/** One RPC request, its options resolved. */
export interface RpcRequest {
  iface: string;
  version: string;
  op: string;
  /** Positional arguments; a client stream's iterable sits at `spec.streamParam`. */
  args: unknown[];
  call: ResolvedCall;
  spec: OperationSpec | undefined;
}

/** How RPC calls reach one backend. */
export interface RpcTransport {
  /** What the backend serves, by interface name (the WebSocket `welcome`, or `GET {prefix}/` over HTTP). */
  readonly interfaces: Readonly<Record<string, { version: string; operations: readonly string[] }>>;
  /** A unary or client-stream call: its result. */
  call(request: RpcRequest): Promise<unknown>;
  /** A server- or two-way-stream call: its items. */
  stream(request: RpcRequest): AsyncIterable<unknown>;
  /** Closes the connection; calls still waiting reject with `ConnectionClosed`. */
  close(): Promise<void>;
}
