import assert from "node:assert/strict";
import { test } from "node:test";

import { newActivityId } from "../src/context.js";

const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("an ActivityId is a random version-4 UUID", () => {
  const ids = new Set(Array.from({ length: 50 }, () => newActivityId()));
  assert.equal(ids.size, 50);
  for (const id of ids) assert.match(id, UUID4);
});

test("a page outside a secure context (no crypto.randomUUID) still gets UUIDs", (t) => {
  const own = Object.getOwnPropertyDescriptor(globalThis.crypto, "randomUUID");
  Object.defineProperty(globalThis.crypto, "randomUUID", { value: undefined, configurable: true });
  t.after(() => {
    if (own === undefined) delete (globalThis.crypto as { randomUUID?: unknown }).randomUUID;
    else Object.defineProperty(globalThis.crypto, "randomUUID", own);
  });
  const ids = new Set(Array.from({ length: 200 }, () => newActivityId()));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.match(id, UUID4);
});
