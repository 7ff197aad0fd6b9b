/**
 * Errors as the backend sends them (`{"code", "status", "name", "message",
 * "details", "activity_id"}`), as JS errors of one class per code.
 *
 * An application error (code `application`) is an `ApplicationError` whose
 * `name` is the name the backend registered it under (by default the
 * exception's qualified name, `"examples.robot_world.interface.RobotNotFound"`;
 * the generated stubs export it as a constant), so
 * `isApplicationError(e, RobotNotFound)` picks it out and `e.details.fields`
 * holds its fields, as on the wire.
 */

/** The error object of the wire (`error` in an `error` message or an HTTP error body). */
export interface WireError {
  code: string;
  status: number;
  name?: string;
  message?: string;
  details?: Record<string, unknown>;
  activity_id?: string | null;
}

export interface TetherErrorInit {
  status?: number;
  details?: Record<string, unknown>;
  activityId?: string | null;
  /** The name the backend gave (its exception class, or an application error's registered name). */
  remoteName?: string;
  cause?: unknown;
}

/** Every error this client raises for a call: what went wrong, on which request. */
export class TetherError extends Error {
  /** The wire code: `not-found`, `application`, `deadline-exceeded`, ... */
  readonly code: string;
  /** The HTTP status of the code (also over WebSocket). */
  readonly status: number;
  /** Structured facts: the parameter that did not fit, an application error's fields, ... */
  readonly details: Record<string, unknown>;
  /** The ActivityId of the request: search the backend's logs for it. */
  readonly activityId: string | null;
  /** The name the backend gave the error (`NotFound`, `RobotNotFound`), or this class's name. */
  readonly remoteName: string;

  constructor(code: string, message: string, init: TetherErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.status = init.status ?? 500;
    this.details = init.details ?? {};
    this.activityId = init.activityId ?? null;
    this.remoteName = init.remoteName ?? new.target.name;
    this.name = new.target.name;
  }
}

/** `bad-request` (and the requests the server took for malformed: 405, 408, 415). */
export class InvalidRequest extends TetherError {}
/** `unauthorized`: the backend's `authorize` hook refused the credential. */
export class Unauthorized extends TetherError {}
/** `forbidden`: this page's origin (or Host) is not allowed. */
export class Forbidden extends TetherError {}
/** `incompatible-version`: the backend serves an interface version this page cannot use. */
export class IncompatibleVersion extends TetherError {}
/** `not-found`: no such interface, operation, channel, method or session. */
export class NotFound extends TetherError {}
/** `payload-too-large`. */
export class PayloadTooLarge extends TetherError {}
/** `unavailable` (503) or `too-many-requests` (429): try again later. */
export class Unavailable extends TetherError {}
/** `deadline-exceeded`: the call's `timeoutMs` passed before the backend finished. */
export class DeadlineExceeded extends TetherError {}
/** `internal` or a code this client does not know. */
export class RemoteError extends TetherError {}

/**
 * The name an application error crosses the wire under, carrying the type of
 * its `details` (the generated stubs export one per `@remote_error` class), so
 * that `isApplicationError(e, RobotNotFound)` types `e.details`.
 */
export type ErrorName<D extends object = Record<string, unknown>> = string & { readonly __details?: D };

/**
 * An exception the backend's impl raised and registered with `@remote_error`.
 * `name` is its registered name; `details.fields` its fields (attrs classes),
 * or `details.args` its arguments.
 */
export class ApplicationError<D extends object = Record<string, unknown>> extends TetherError {
  declare readonly details: Record<string, unknown> & D;

  constructor(code: string, message: string, init: TetherErrorInit = {}) {
    super(code, message, init);
    this.name = init.remoteName ?? "ApplicationError";
  }
}

/** The connection to the backend failed or closed; `closeCode` is the WebSocket close code when there was one. */
export class ConnectionClosed extends TetherError {
  readonly closeCode: number | null;
  constructor(message: string, init: TetherErrorInit & { closeCode?: number | null } = {}) {
    super("connection-closed", message, { status: 502, ...init });
    this.closeCode = init.closeCode ?? null;
  }
}

/** The connection broke after the call was sent: the backend may or may not have run it. */
export class CallMayHaveRun extends ConnectionClosed {}

const BY_CODE: Record<string, new (code: string, message: string, init?: TetherErrorInit) => TetherError> = {
  "bad-request": InvalidRequest,
  "method-not-allowed": InvalidRequest,
  "request-timeout": InvalidRequest,
  "unsupported-media-type": InvalidRequest,
  unauthorized: Unauthorized,
  forbidden: Forbidden,
  "incompatible-version": IncompatibleVersion,
  "not-found": NotFound,
  "payload-too-large": PayloadTooLarge,
  unavailable: Unavailable,
  "too-many-requests": Unavailable,
  "deadline-exceeded": DeadlineExceeded,
  application: ApplicationError,
  internal: RemoteError,
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The JS error of a wire error object. Anything malformed becomes a
 * `RemoteError` that says what came, rather than a TypeError later.
 */
export function errorFromWire(error: unknown, fallbackStatus = 500): TetherError {
  if (!isRecord(error) || typeof error["code"] !== "string") {
    return new RemoteError("internal", `the backend sent a malformed error: ${preview(error)}`, {
      status: fallbackStatus,
    });
  }
  const code = error["code"];
  const status = typeof error["status"] === "number" ? error["status"] : fallbackStatus;
  const message = typeof error["message"] === "string" ? error["message"] : code;
  const details = isRecord(error["details"]) ? error["details"] : {};
  const activityId = typeof error["activity_id"] === "string" ? error["activity_id"] : null;
  const init: TetherErrorInit = { status, details, activityId };
  if (typeof error["name"] === "string" && error["name"] !== "") init.remoteName = error["name"];
  const cls = BY_CODE[code] ?? RemoteError;
  return new cls(code, message, init);
}

/**
 * Whether `error` is the application error registered as `name` (any, without
 * a name). With a generated name, `error.details` is typed.
 */
export function isApplicationError<D extends object = Record<string, unknown>>(
  error: unknown,
  name?: ErrorName<D>,
): error is ApplicationError<D> {
  return error instanceof ApplicationError && (name === undefined || error.name === name);
}

/** At most 200 characters of a value, for messages about what came. */
export function preview(value: unknown): string {
  let text: string;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}
