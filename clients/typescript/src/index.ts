/**
 * tether's browser frontend: typed RPC and IPC with a tether backend over
 * HTTP and WebSocket. See docs/browser.md.
 */

export {
  ApplicationError,
  CallMayHaveRun,
  ConnectionClosed,
  DeadlineExceeded,
  Forbidden,
  IncompatibleVersion,
  InvalidRequest,
  NotFound,
  PayloadTooLarge,
  RemoteError,
  TetherError,
  Unauthorized,
  Unavailable,
  errorFromWire,
  isApplicationError,
} from "./errors.js";
export type { ErrorName, WireError } from "./errors.js";
export { newActivityId, traceparentFor } from "./context.js";
export type { CallOptions, SessionContext } from "./context.js";
export { decodeFrame, encodeFrame, fromBase64, toBase64 } from "./codec.js";
export type { Message } from "./codec.js";
export { isVersionCompatible } from "./versions.js";
export type {
  IpcChannelRef,
  NotificationRef,
  OperationSpec,
  RpcInterfaceRef,
  Shape,
  StreamKind,
} from "./types.js";
export type { ConnectionState, ConnectOptions } from "./transport.js";
export { connectRpc, RpcClient } from "./rpc.js";
export type { RpcConnectOptions } from "./rpc.js";
export { connectIpc, IpcSession } from "./ipc.js";
export type { IpcConnectOptions } from "./ipc.js";
export { Session } from "./session.js";
export type { HandlerContext, Progress, SessionOptions } from "./session.js";
export { openWebSocket } from "./ws.js";
export type { WebSocketConstructor, WebSocketLike, WebSocketOptions } from "./ws.js";
export type { StreamWindow } from "./streams.js";
export type { MessagePipe, Welcome } from "./transport.js";
