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
export type { WireError } from "./errors.js";
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
