/**
 * What `tether codegen typescript` emits a value of, for each interface: its
 * name, version and operations, and where their values hold bytes. The type
 * parameter carries the generated TypeScript interface, so that
 * `client.proxy(RobotWorldRead)` is typed.
 */

/**
 * Where a value holds bytes, so that base64 text that came in JSON becomes a
 * `Uint8Array`. Only the parts that hold bytes are described; `null` means
 * none does.
 */
export type Shape =
  | "bytes"
  | { readonly list: Shape }
  | { readonly tuple: readonly (Shape | null)[] }
  | { readonly dict: Shape }
  | { readonly fields: Readonly<Record<string, Shape>> }
  | { readonly union: { readonly tag: string; readonly cases: Readonly<Record<string, Shape>> } };

/** Which way an operation streams, if it does. */
export type StreamKind = "server" | "client" | "both";

/**
 * One operation (RPC) or method (IPC, notification), keyed in its ref by its
 * camelCase TypeScript name (`countRobots`).
 */
export interface OperationSpec {
  /** Its name on the wire: the Python name (`count_robots`). */
  readonly name: string;
  /** The parameters' names, in order (the wire's `args` are positional). */
  readonly params: readonly string[];
  /** Where the arguments hold bytes (for a page that serves the method, or a listener), by position. */
  readonly args?: readonly (Shape | null)[];
  /** Where the result (or each item of a result stream) holds bytes. */
  readonly result?: Shape | null;
  /** Set for a streaming operation; the stream parameter's position is `streamParam`. */
  readonly stream?: StreamKind;
  readonly streamParam?: number;
}

/** An `RpcInterface`: `T` is its generated proxy type. */
export interface RpcInterfaceRef<T> {
  readonly kind: "rpc";
  readonly name: string;
  readonly version: string;
  readonly operations: Readonly<Record<string, OperationSpec>>;
  /** Never set: it only carries `T`. */
  readonly __proxy?: T;
}

/**
 * An `IpcInterface`: `T` is its generated proxy type (what a caller sees),
 * `H` its generated handler type (what a page that serves it implements).
 */
export interface IpcChannelRef<T, H = unknown> {
  readonly kind: "ipc";
  readonly channel: string;
  readonly version: string;
  readonly methods: Readonly<Record<string, OperationSpec>>;
  readonly __proxy?: T;
  /** Never set: it only carries `H`. */
  readonly __handler?: H;
}

/** A `NotificationInterface`: `T` is its generated listener type (every method optional). */
export interface NotificationRef<T> {
  readonly kind: "notification";
  readonly channel: string;
  readonly version: string;
  readonly methods: Readonly<Record<string, OperationSpec>>;
  readonly __listener?: T;
}
