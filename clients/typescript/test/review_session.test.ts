/** Review: defects of the session engine and codec against a hostile or buggy backend (each test fails on 8d9d405). */
import assert from "node:assert/strict";
import { test } from "node:test";

import { applyShape } from "../src/codec.js";
import { resolveCall } from "../src/context.js";
import type { CallOptions } from "../src/context.js";
import { TetherError } from "../src/errors.js";
import { HttpIpcPipe } from "../src/ipc_http.js";
import { Session } from "../src/session.js";
import type { MessagePipe, RpcRequest } from "../src/transport.js";
import type { OperationSpec } from "../src/types.js";
import { FakePipe, settle } from "./fakes.js";

function request(op: string, args: unknown[], options: CallOptions = {}, spec?: OperationSpec): RpcRequest {
  return { iface: "Robots", version: "1.0.0", op, args, call: resolveCall(options), spec };
}

function open(): { pipe: FakePipe; session: Session; errors: TetherError[] } {
  const pipe = new FakePipe();
  const errors: TetherError[] = [];
  const session = new Session(pipe, { onError: (e) => errors.push(e) });
  return { pipe, session, errors };
}

/** "settled" or "pending" after the event loop ran a while. */
async function state(promise: Promise<unknown>): Promise<string> {
  let done = false;
  promise.then(() => (done = true), () => (done = true));
  await settle(20);
  return done ? "settled" : "pending";
}

test("review: a result whose bytes are not base64 settles the call (it hangs forever)", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "snapshot", params: [], result: "bytes" };
  const result = session.call(request("snapshot", [], {}, spec));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "result", id: call["id"], value: "not base64!" });
  assert.equal(await state(result), "settled", "the call's promise never settles and its entry stays in `outgoing`");
});

test("review: a union result whose tag names an Object.prototype key settles the call", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "shape", params: [], result: { union: { tag: "kind", cases: { blob: { fields: { data: "bytes" } } } } } };
  const result = session.call(request("shape", [], {}, spec));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "result", id: call["id"], value: { kind: "constructor", data: "AA==" } });
  assert.equal(await state(result), "settled");
  assert.deepEqual(await result, { kind: "constructor", data: "AA==" }); // an unknown case passes as it is
});

test("review: applyShape of a dict does not let a `__proto__` key replace the result's prototype", () => {
  const value = JSON.parse('{"a": "AQ==", "__proto__": {"isAdmin": true, "data": "AQ=="}}') as unknown;
  const out = applyShape(value, { dict: { fields: { data: "bytes" } } }) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(out), Object.prototype, "the backend chose the result's prototype");
  assert.equal(out["isAdmin"], undefined);
  assert.ok(Object.hasOwn(out, "__proto__"), "the key __proto__ was lost");
});

test("review: an invoke whose bytes argument is not base64 is answered, and leaves nothing running", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "save_blob", params: ["data"], args: ["bytes"] };
  session.serve("files", () => ({ spec, fn: () => 1 }));
  pipe.feed({ t: "invoke", id: 7, channel: "files", method: "save_blob", args: ["%%%"] });
  await settle(10);
  assert.equal(pipe.of("error").length + pipe.of("result").length, 1, "the backend's invoke is never answered");
  assert.equal((session as unknown as { incoming: Map<number, unknown> }).incoming.size, 0, "the invoke stays in `incoming`");
});

test("review: a served handler whose value cannot be sent answers an error (the backend waits forever)", async () => {
  const { pipe, session } = open();
  // a pipe that refuses the value as a real one does (toJsonText: BigInt, a cycle, a Float32Array ...)
  const send = pipe.send.bind(pipe);
  pipe.send = async (m) => {
    if (m.t === "result") JSON.stringify(m);
    return send(m);
  };
  session.serve("files", () => ({ spec: undefined, fn: () => 10n }));
  pipe.feed({ t: "invoke", id: 8, channel: "files", method: "size", args: [] });
  await settle(10);
  assert.equal(pipe.of("error").length, 1, "no result and no error went back for invoke 8");
});

test("review: a stream item that cannot be shaped cancels the stream (it is never cancelled)", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "watch", params: [], stream: "server", result: "bytes" };
  const iterator = session.stream(request("watch", [], {}, spec))[Symbol.asyncIterator]();
  const next = iterator.next();
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "item", id: call["id"], value: "!!" });
  await assert.rejects(next);
  await settle();
  assert.equal(pipe.of("cancel").length, 1, "the backend keeps streaming to a page that has stopped reading");
  assert.equal((session as unknown as { outgoing: Map<number, unknown> }).outgoing.size, 0);
});

test("review: a call the HTTP IPC pipe cannot encode leaks no timer, listener or entry", async () => {
  const realFetch = globalThis.fetch;
  globalThis.fetch = () => new Promise<Response>(() => {}); // the event stream never answers
  try {
    const pipe = new HttpIpcPipe("http://x/rpc", { session_id: "s", token: "t", events: "ipc/s/events", welcome: { session_id: "s", channels: {}, interfaces: {} }, ping: null, grace_ms: 5000 }, { attempts: 1, firstDelayMs: 1, maxDelayMs: 1 });
    const session = new Session(pipe as MessagePipe);
    const controller = new AbortController();
    let listeners = 0;
    const add = controller.signal.addEventListener.bind(controller.signal);
    controller.signal.addEventListener = ((...a: Parameters<typeof add>) => { listeners++; add(...a); }) as typeof add;
    const rem = controller.signal.removeEventListener.bind(controller.signal);
    controller.signal.removeEventListener = ((...a: Parameters<typeof rem>) => { listeners--; rem(...a); }) as typeof rem;
    const call = session.invoke("files", "put", [1n], resolveCall({ signal: controller.signal, timeoutMs: 60_000 }), undefined);
    await assert.rejects(call);
    assert.equal((session as unknown as { outgoing: Map<number, unknown> }).outgoing.size, 0, "the failed call stays in `outgoing`");
    assert.equal(listeners, 0, "the abort listener stays on the page's long-lived signal");
    void session.close().catch(() => {}); // its DELETE never answers here
  } finally {
    globalThis.fetch = realFetch;
  }
});

test("review: two next() calls waiting at once on a result stream both settle (the first is lost)", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "watch", params: [], stream: "server" };
  const iterator = session.stream(request("watch", [], {}, spec))[Symbol.asyncIterator]();
  const first = iterator.next();
  const second = iterator.next();
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "item", id: call["id"], value: 1 });
  pipe.feed({ t: "item", id: call["id"], value: 2 });
  pipe.feed({ t: "result", id: call["id"], value: null });
  assert.equal(await state(first), "settled", "the first next() waits forever: its wake-up was overwritten by the second's");
  assert.deepEqual([await first, await second].map((r) => r.value).sort(), [1, 2]);
});
