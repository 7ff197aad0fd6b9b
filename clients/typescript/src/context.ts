/**
 * What every call carries: its ActivityId, W3C trace context, metadata,
 * deadline and cancellation signal.
 */

/** Options of one call (the last argument of every stub method). */
export interface CallOptions {
  /** Aborting it cancels the call: the backend's impl is cancelled, the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The call's deadline, in milliseconds from now; sent as `timeout_ms` / `X-Timeout-Ms`. */
  timeoutMs?: number;
  /** The user action this call belongs to; a fresh UUID when left out. */
  activityId?: string;
  /** W3C `traceparent`; one whose trace id is the ActivityId's when left out. */
  traceparent?: string;
  /** Request metadata (`tether.metadata` on the backend), sent as `ctx.metadata` / `baggage`. */
  metadata?: Record<string, string>;
  /** Hears the impl's `tether.report_progress` reports (WebSocket and IPC sessions). */
  onProgress?: (progress: { done: number; total?: number; message?: string }) => void;
}

/** A call's options with every default filled in. */
export interface ResolvedCall {
  activityId: string;
  traceparent: string;
  metadata: Record<string, string> | undefined;
  /** Milliseconds left when the call is sent, or undefined for no deadline. */
  timeoutMs: number | undefined;
  signal: AbortSignal | undefined;
  onProgress: ((progress: { done: number; total?: number; message?: string }) => void) | undefined;
}

/** The largest `timeout_ms` the wire carries (2**53 - 1). */
export const MAX_TIMEOUT_MS = Number.MAX_SAFE_INTEGER;

const HEX = /^[0-9a-f]+$/;
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}/;

const BYTE_HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));
// Random bytes are drawn from the platform's CSPRNG 4 KiB at a time: one call
// of `crypto` per 170 calls rather than two per call (each a binding crossing).
const POOL_SIZE = 4096;
let pool = new Uint8Array(0);
let used = 0;

function randomBytes(count: number): Uint8Array {
  if (used + count > pool.length) {
    pool = crypto.getRandomValues(new Uint8Array(POOL_SIZE));
    used = 0;
  }
  const bytes = pool.subarray(used, used + count);
  used += count;
  return bytes;
}

function hex(bytes: Uint8Array, from: number, to: number): string {
  let text = "";
  for (let i = from; i < to; i++) text += BYTE_HEX[bytes[i] as number];
  return text;
}

/** A new ActivityId: a random (version 4) UUID, as tether makes them. */
export function newActivityId(): string {
  const b = randomBytes(16);
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  return `${hex(b, 0, 4)}-${hex(b, 4, 6)}-${hex(b, 6, 8)}-${hex(b, 8, 10)}-${hex(b, 10, 16)}`;
}

function randomHex(bytes: number): string {
  return hex(randomBytes(bytes), 0, bytes);
}

/**
 * A `traceparent` for a call of `activityId`: its trace id is the ActivityId's
 * 32 hex digits when it is a UUID (so the backend's traces and logs line up),
 * else a random one; its parent id is random; sampled.
 */
export function traceparentFor(activityId: string): string {
  const digits = activityId.replaceAll("-", "").toLowerCase();
  const traceId = digits.length === 32 && HEX.test(digits) && !/^0+$/.test(digits) ? digits : randomHex(16);
  let parentId = randomHex(8);
  while (parentId === "0000000000000000") parentId = randomHex(8); // all-zero is invalid (W3C)
  return `00-${traceId}-${parentId}-01`;
}

/** Whether `value` is W3C Trace Context as the backend accepts it. */
export function isTraceparent(value: string): boolean {
  if (!TRACEPARENT.test(value)) return false;
  const [, traceId, parentId] = value.split("-");
  return !/^0+$/.test(traceId ?? "") && !/^0+$/.test(parentId ?? "");
}

/** Checks options once, before anything is sent: a clear error rather than a refusal from the backend. */
export function resolveCall(options: CallOptions = {}): ResolvedCall {
  const { timeoutMs, activityId, traceparent, metadata, signal, onProgress } = options;
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError("onProgress must be a function");
  }
  if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0 && !Number.isNaN(timeoutMs))) {
    throw new TypeError(`timeoutMs must be a number of milliseconds >= 0, not ${String(timeoutMs)}`);
  }
  if (activityId !== undefined && (typeof activityId !== "string" || !/^[^\p{Cc}]{1,200}$/u.test(activityId))) {
    throw new TypeError("activityId must be 1 to 200 printable characters");
  }
  if (traceparent !== undefined && (typeof traceparent !== "string" || !isTraceparent(traceparent))) {
    throw new TypeError(`traceparent must be W3C Trace Context (00-<32 hex>-<16 hex>-<2 hex>), not ${String(traceparent)}`);
  }
  if (metadata !== undefined) {
    if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
      throw new TypeError("metadata must be an object of strings");
    }
    for (const [key, value] of Object.entries(metadata)) {
      if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}$/.test(key)) {
        throw new TypeError(`metadata key ${JSON.stringify(key)} is not 1 to 64 token characters`);
      }
      if (typeof value !== "string") throw new TypeError(`metadata value of ${key} must be a string`);
    }
  }
  const id = activityId ?? newActivityId();
  return {
    activityId: id,
    traceparent: traceparent ?? traceparentFor(id),
    metadata: metadata !== undefined && Object.keys(metadata).length > 0 ? metadata : undefined,
    timeoutMs: timeoutMs === undefined ? undefined : Math.min(Math.ceil(timeoutMs), MAX_TIMEOUT_MS),
    signal,
    onProgress,
  };
}

/** The wire's `ctx` of an RPC `call`. */
export function rpcContext(call: ResolvedCall, session: SessionContext): Record<string, unknown> {
  const ctx: Record<string, unknown> = { activity_id: call.activityId, traceparent: call.traceparent };
  if (session.sessionId !== undefined) ctx["session_id"] = session.sessionId;
  if (session.application !== undefined) {
    ctx["application_id"] = session.application.id;
    ctx["application_version"] = session.application.version;
  }
  if (session.authorization !== undefined) ctx["authorization"] = session.authorization;
  if (call.metadata !== undefined) ctx["metadata"] = call.metadata;
  return ctx;
}

/** What a client sends with every request of a connection. */
export interface SessionContext {
  sessionId?: string;
  application?: { id: string; version: string };
  authorization?: string;
}
