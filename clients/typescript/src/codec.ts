/**
 * Messages on the wire (docs/wire.md): JSON text, or a binary frame where a
 * message holds `Uint8Array` values and the transport carries binary.
 *
 * A frame is a u32 big-endian envelope length L, L bytes of UTF-8 JSON (each
 * bytes value replaced by `null` and listed in `"bin"`), then the bytes
 * values back to back. Its first byte is always 0.
 */

import { InvalidRequest } from "./errors.js";
import type { Shape } from "./types.js";

/** One message of the wire: a JSON object with a `t` tag, whose values may be `Uint8Array`. */
export type Message = { t: string } & Record<string, unknown>;

/** The most attachments one frame carries (more: the message goes as JSON). */
export const MAX_ATTACHMENTS = 4096;
/** The longest envelope a frame holds (2**24 - 1 bytes). */
export const MAX_ENVELOPE = 2 ** 24 - 1;
/** The content type of a frame in an HTTP body. */
export const FRAME_CONTENT_TYPE = "application/vnd.tether.frame";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Standard base64 (RFC 4648 section 4), padded: how bytes travel in JSON. */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  const chunk = 0x8000;
  for (let at = 0; at < bytes.length; at += chunk) {
    binary += String.fromCharCode(...bytes.subarray(at, at + chunk));
  }
  return btoa(binary);
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Bytes of standard base64 text; anything else is refused, as the backend refuses it. */
export function fromBase64(text: string): Uint8Array {
  if (!STRICT_BASE64.test(text)) {
    throw new InvalidRequest("bad-request", "expected bytes as standard base64 text (RFC 4648 section 4)", {
      status: 400,
    });
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function isPlainContainer(value: unknown): value is Record<string, unknown> | unknown[] {
  return typeof value === "object" && value !== null && !(value instanceof Uint8Array);
}

/**
 * JSON text of a message, with every `Uint8Array` as base64 (for a peer or a
 * transport that only carries JSON).
 */
export function toJsonText(message: unknown): string {
  // Most messages hold no binary value: stringify them without a replacer,
  // which costs a function call per value.
  if (!hasBinary(message, 0)) return JSON.stringify(message);
  return JSON.stringify(message, (_key, value: unknown) => {
    if (value instanceof Uint8Array) return toBase64(value);
    if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
      throw new TypeError("binary values must be Uint8Array");
    }
    return value;
  });
}

/** Whether a value holds any ArrayBuffer or view of one (the slow path of `toJsonText`). */
function hasBinary(value: unknown, depth: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return true;
  if (depth > 100) return true; // let JSON.stringify report what it makes of it
  if (Array.isArray(value)) {
    for (const item of value) if (hasBinary(item, depth + 1)) return true;
    return false;
  }
  for (const key in value) {
    if (hasBinary((value as Record<string, unknown>)[key], depth + 1)) return true;
  }
  return false;
}

/** Whether a message holds any `Uint8Array` (so it may go as a frame). */
export function hasBytes(value: unknown, depth = 0): boolean {
  if (value instanceof Uint8Array) return true;
  if (!isPlainContainer(value) || depth > 100) return false;
  for (const item of Array.isArray(value) ? value : Object.values(value)) {
    if (hasBytes(item, depth + 1)) return true;
  }
  return false;
}

/**
 * The frame of a message holding bytes, or null when it should go as JSON
 * (no bytes, more than 4096 of them, or an envelope too long for a frame).
 */
export function encodeFrame(message: Message): Uint8Array | null {
  if (!hasBytes(message)) return null; // the common case, without copying the message
  const bin: { path: (string | number)[]; size: number }[] = [];
  const attachments: Uint8Array[] = [];
  const path: (string | number)[] = [];
  const strip = (value: unknown): unknown => {
    if (value instanceof Uint8Array) {
      bin.push({ path: [...path], size: value.length });
      attachments.push(value);
      return null;
    }
    if (!isPlainContainer(value)) return value;
    if (Array.isArray(value)) {
      return value.map((item, index) => {
        path.push(index);
        const out = strip(item);
        path.pop();
        return out;
      });
    }
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      path.push(key);
      out[key] = strip(item);
      path.pop();
    }
    return out;
  };
  const envelope = strip(message) as Record<string, unknown>;
  if (bin.length === 0 || bin.length > MAX_ATTACHMENTS) return null;
  envelope["bin"] = bin;
  const json = encoder.encode(JSON.stringify(envelope));
  if (json.length > MAX_ENVELOPE) return null;
  let total = 4 + json.length;
  for (const part of attachments) total += part.length;
  const frame = new Uint8Array(total);
  new DataView(frame.buffer).setUint32(0, json.length, false);
  frame.set(json, 4);
  let at = 4 + json.length;
  for (const part of attachments) {
    frame.set(part, at);
    at += part.length;
  }
  return frame;
}

function malformed(why: string): InvalidRequest {
  return new InvalidRequest("bad-request", `malformed frame: ${why}`, { status: 400 });
}

/** The message of a frame, its attachments put back in place as `Uint8Array` (views of `frame`). */
export function decodeFrame(frame: Uint8Array): Message {
  if (frame.length < 4) throw malformed("shorter than its 4-byte length");
  const length = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0, false);
  if (4 + length > frame.length) throw malformed("the envelope length runs past the frame's end");
  let message: unknown;
  try {
    message = JSON.parse(decoder.decode(frame.subarray(4, 4 + length)));
  } catch {
    throw malformed("the envelope is not UTF-8 JSON");
  }
  if (!isPlainContainer(message) || Array.isArray(message)) throw malformed("the envelope is not a JSON object");
  const bin = (message as Record<string, unknown>)["bin"];
  delete (message as Record<string, unknown>)["bin"];
  let at = 4 + length;
  if (bin !== undefined) {
    if (!Array.isArray(bin) || bin.length > MAX_ATTACHMENTS) throw malformed('"bin" is not a list of attachments');
    for (const entry of bin as unknown[]) {
      const { path, size } = (entry ?? {}) as { path?: unknown; size?: unknown };
      if (!Array.isArray(path) || path.length === 0 || path.length > 104 || typeof size !== "number" || size < 0) {
        throw malformed('an entry of "bin" is not {"path": [...], "size": n}');
      }
      let target: unknown = message;
      // Own keys only: a path through "__proto__" or "constructor" names nothing.
      for (const key of path.slice(0, -1)) {
        target = isPlainContainer(target) && Object.hasOwn(target, key as PropertyKey) ? (target as Record<string | number, unknown>)[key as string | number] : undefined;
      }
      const last = path[path.length - 1] as string | number;
      if (!isPlainContainer(target) || !Object.hasOwn(target, last) || (target as Record<string | number, unknown>)[last] !== null) {
        throw malformed(`the path ${JSON.stringify(path)} does not name a null`);
      }
      if (at + size > frame.length) throw malformed("the attachment sizes run past the frame's end");
      (target as Record<string | number, unknown>)[last] = frame.subarray(at, at + size);
      at += size;
    }
  }
  if (at !== frame.length) throw malformed("the attachment sizes do not add up to the frame's length");
  if (typeof (message as Record<string, unknown>)["t"] !== "string") {
    (message as Record<string, unknown>)["t"] = "";
  }
  return message as Message;
}

/**
 * A value as the page's types declare it: where `shape` says bytes and JSON
 * carried base64 text, the text becomes a `Uint8Array` (a value already
 * `Uint8Array`, from a frame, stays). Values not named by the shape pass as
 * they are.
 */
export function applyShape(value: unknown, shape: Shape | null | undefined): unknown {
  if (shape === null || shape === undefined || value === null || value === undefined) return value;
  if (shape === "bytes") return typeof value === "string" ? fromBase64(value) : value;
  if ("list" in shape) {
    return Array.isArray(value) ? value.map((item) => applyShape(item, shape.list)) : value;
  }
  if ("tuple" in shape) {
    return Array.isArray(value) ? value.map((item, index) => applyShape(item, shape.tuple[index])) : value;
  }
  if (!isPlainContainer(value) || Array.isArray(value)) return value;
  if ("dict" in shape) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, applyShape(item, shape.dict)]));
  }
  if ("fields" in shape) {
    const out: Record<string, unknown> = { ...value };
    for (const [key, fieldShape] of Object.entries(shape.fields)) {
      if (key in out) out[key] = applyShape(out[key], fieldShape);
    }
    return out;
  }
  const tag = value[shape.union.tag];
  const caseShape = typeof tag === "string" && Object.hasOwn(shape.union.cases, tag) ? shape.union.cases[tag] : undefined;
  return caseShape === undefined ? value : applyShape(value, caseShape);
}
