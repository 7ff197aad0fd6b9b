import assert from "node:assert/strict";
import { test } from "node:test";

import { applyShape, decodeFrame, encodeFrame, fromBase64, toBase64, toJsonText } from "../src/codec.js";

test("a frame as docs/wire.md draws it, byte by byte", () => {
  const frame = encodeFrame({
    t: "invoke",
    id: 5,
    channel: "files",
    method: "write",
    args: ["a.txt", new Uint8Array([1, 2, 3])],
  });
  assert.ok(frame !== null);
  assert.equal(frame[0], 0);
  assert.equal(frame.length, 4 + 115 + 3);
  assert.deepEqual([...frame.subarray(frame.length - 3)], [1, 2, 3]);
  const back = decodeFrame(frame);
  assert.deepEqual(back["args"], ["a.txt", new Uint8Array([1, 2, 3])]);
});

test("a message without bytes is not a frame", () => {
  assert.equal(encodeFrame({ t: "call", args: [1] }), null);
});

test("sizes that do not add up are refused", () => {
  const frame = encodeFrame({ t: "result", id: 1, value: new Uint8Array([9]) });
  assert.ok(frame !== null);
  const longer = new Uint8Array(frame.length + 1);
  longer.set(frame);
  assert.throws(() => decodeFrame(longer), /do not add up/);
});

test("base64 is strict, and bytes in JSON travel as base64", () => {
  assert.equal(toBase64(new TextEncoder().encode("hello")), "aGVsbG8=");
  assert.deepEqual(fromBase64("aGVsbG8="), new TextEncoder().encode("hello"));
  assert.throws(() => fromBase64("aGVsbG8"), /standard base64/);
  assert.equal(toJsonText({ t: "x", v: new Uint8Array([255]) }), '{"t":"x","v":"/w=="}');
});

test("a shape turns base64 into bytes where the types say so", () => {
  const value = applyShape(
    { kind: "blob", parts: ["AQ==", "Ag=="], name: "n" },
    { union: { tag: "kind", cases: { blob: { fields: { parts: { list: "bytes" } } } } } },
  );
  assert.deepEqual(value, { kind: "blob", parts: [new Uint8Array([1]), new Uint8Array([2])], name: "n" });
});
