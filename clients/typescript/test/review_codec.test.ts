import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeFrame } from "../src/codec.js";

function frame(envelope: unknown, attachment: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(envelope));
  const out = new Uint8Array(4 + json.length + attachment.length);
  new DataView(out.buffer).setUint32(0, json.length, false);
  out.set(json, 4);
  out.set(attachment, 4 + json.length);
  return out;
}

test("a frame path through inherited keys (__proto__, constructor) is malformed, not a walk into Object.prototype", () => {
  for (const path of [["__proto__", "__proto__"], ["constructor", "prototype"], ["value", "toString"]]) {
    const bad = frame({ t: "result", id: 1, value: null, bin: [{ path, size: 1 }] }, new Uint8Array([7]));
    assert.throws(() => decodeFrame(bad), /does not name a null/, JSON.stringify(path));
  }
  assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
});
