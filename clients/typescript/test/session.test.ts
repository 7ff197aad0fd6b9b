import assert from "node:assert/strict";
import { test } from "node:test";

import { resolveCall } from "../src/context.js";
import type { CallOptions } from "../src/context.js";
import {
  ApplicationError,
  CallMayHaveRun,
  ConnectionClosed,
  DeadlineExceeded,
  InvalidRequest,
  NotFound,
  TetherError,
  isApplicationError,
} from "../src/errors.js";
import { Session } from "../src/session.js";
import type { HandlerContext } from "../src/session.js";
import type { RpcRequest } from "../src/transport.js";
import type { OperationSpec } from "../src/types.js";
import { FakePipe, settle } from "./fakes.js";

function request(op: string, args: unknown[], options: CallOptions = {}, spec?: OperationSpec): RpcRequest {
  return { iface: "Robots", version: "1.0.0", op, args, call: resolveCall(options), spec };
}

function open(): { pipe: FakePipe; session: Session; errors: TetherError[] } {
  const pipe = new FakePipe();
  const errors: TetherError[] = [];
  const session = new Session(pipe, { context: { application: { id: "page", version: "1.0" } }, onError: (e) => errors.push(e) });
  return { pipe, session, errors };
}

test("a call goes out with its ctx and deadline, and its result comes back", async () => {
  const { pipe, session } = open();
  const result = session.call(request("count_robots", [{ key: "m1" }], { timeoutMs: 5000, metadata: { tenant: "acme" }, activityId: "a1" }));
  const call = await pipe.waitFor((m) => m.t === "call");
  assert.equal(call["iface"], "Robots");
  assert.equal(call["ver"], "1.0.0");
  assert.equal(call["op"], "count_robots");
  assert.deepEqual(call["args"], [{ key: "m1" }]);
  assert.equal(call["timeout_ms"], 5000);
  const ctx = call["ctx"] as Record<string, unknown>;
  assert.equal(ctx["activity_id"], "a1");
  assert.equal(ctx["application_id"], "page");
  assert.deepEqual(ctx["metadata"], { tenant: "acme" });
  assert.match(String(ctx["traceparent"]), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  pipe.feed({ t: "result", id: call["id"], value: 3 });
  assert.equal(await result, 3);
});

test("calls get distinct ids and answers may come in any order", async () => {
  const { pipe, session } = open();
  const first = session.call(request("a", []));
  const second = session.call(request("b", []));
  const [c1, c2] = pipe.of("call");
  assert.notEqual(c1?.["id"], c2?.["id"]);
  pipe.feed({ t: "result", id: c2?.["id"], value: "two" });
  pipe.feed({ t: "result", id: c1?.["id"], value: "one" });
  assert.deepEqual(await Promise.all([first, second]), ["one", "two"]);
});

test("an application error arrives as ApplicationError with its name and details", async () => {
  const { pipe, session } = open();
  const result = session.call(request("get", ["r9"]));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "error", id: call["id"], error: { code: "application", status: 422, name: "RobotNotFound", message: "no robot r9", details: { robot_id: "r9" }, activity_id: "x" } });
  const error = await result.then(() => null, (e: unknown) => e);
  assert.ok(error instanceof ApplicationError);
  assert.ok(isApplicationError(error, "RobotNotFound"));
  assert.equal(error.details["robot_id"], "r9");
  assert.equal(error.status, 422);
});

test("aborting the signal sends cancel and rejects with the signal's reason", async () => {
  const { pipe, session } = open();
  const controller = new AbortController();
  const result = session.call(request("slow", [], { signal: controller.signal }));
  const call = await pipe.waitFor((m) => m.t === "call");
  controller.abort();
  const error = await result.then(() => null, (e: unknown) => e);
  assert.ok(error instanceof DOMException);
  assert.equal(error.name, "AbortError");
  const cancel = await pipe.waitFor((m) => m.t === "cancel", "cancel");
  assert.equal(cancel["id"], call["id"]);
  pipe.feed({ t: "result", id: call["id"], value: 1 }); // late: dropped
});

test("a signal aborted before the call sends nothing", async () => {
  const { pipe, session } = open();
  const reason = new Error("user left");
  await assert.rejects(session.call(request("slow", [], { signal: AbortSignal.abort(reason) })), (e) => e === reason);
  await settle();
  assert.equal(pipe.sent.length, 0);
});

test("a deadline that passes rejects with DeadlineExceeded and cancels the call", async () => {
  const { pipe, session } = open();
  const started = Date.now();
  const result = session.call(request("slow", [], { timeoutMs: 30, activityId: "a7" }));
  const error = await result.then(() => null, (e: unknown) => e);
  assert.ok(error instanceof DeadlineExceeded);
  assert.equal(error.activityId, "a7");
  assert.match(error.message, /timeoutMs 30/);
  assert.ok(Date.now() - started >= 25);
  const call = pipe.of("call")[0];
  assert.equal(pipe.of("cancel")[0]?.["id"], call?.["id"]);
});

test("progress reports reach onProgress", async () => {
  const { pipe, session } = open();
  const seen: unknown[] = [];
  const result = session.call(request("index", [], { onProgress: (p) => seen.push(p) }));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "progress", id: call["id"], done: 2, total: 5, message: "file 3" });
  pipe.feed({ t: "progress", id: call["id"], done: 3 });
  pipe.feed({ t: "result", id: call["id"], value: null });
  assert.equal(await result, null);
  assert.deepEqual(seen, [{ done: 2, total: 5, message: "file 3" }, { done: 3 }]);
});

test("bytes in a JSON result become Uint8Array by the spec's result shape", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "snapshot", params: [], result: { fields: { data: "bytes" } } };
  const result = session.call(request("snapshot", [], {}, spec));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "result", id: call["id"], value: { data: "aGVsbG8=", name: "x" } });
  assert.deepEqual(await result, { data: new TextEncoder().encode("hello"), name: "x" });
});

const WATCH: OperationSpec = { name: "watch", params: ["robot_id"], stream: "server" };

test("a server stream grants a window of credit, re-grants after half, and break sends cancel", async () => {
  const { pipe, session } = open();
  const stream = session.stream(request("watch", ["r1"], {}, WATCH));
  await settle();
  assert.equal(pipe.sent.length, 0, "nothing goes out before the stream is iterated");
  const iterator = stream[Symbol.asyncIterator]();
  const call = await pipe.waitFor((m) => m.t === "call");
  const credit = await pipe.waitFor((m) => m.t === "credit");
  assert.deepEqual(credit, { t: "credit", id: call["id"], items: 256, bytes: 4 * 1024 * 1024 });
  for (let i = 0; i < 200; i++) pipe.feed({ t: "item", id: call["id"], value: i }, 10);
  for (let i = 0; i < 127; i++) assert.deepEqual(await iterator.next(), { done: false, value: i });
  assert.equal(pipe.of("credit").length, 1, "no credit before half the window is taken");
  await iterator.next();
  assert.deepEqual(pipe.of("credit")[1], { t: "credit", id: call["id"], items: 128, bytes: 1280 });
  await iterator.return?.();
  assert.deepEqual(pipe.of("cancel"), [{ t: "cancel", id: call["id"] }]);
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
});

test("a server stream ends with the result and fails with the error", async () => {
  const { pipe, session } = open();
  const items: unknown[] = [];
  const done = (async () => {
    for await (const item of session.stream(request("watch", ["r1"], {}, WATCH))) items.push(item);
  })();
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "item", id: call["id"], value: "a" });
  pipe.feed({ t: "item", id: call["id"], value: "b" });
  pipe.feed({ t: "result", id: call["id"], value: null });
  await done;
  assert.deepEqual(items, ["a", "b"]);

  const failing = (async () => {
    for await (const item of session.stream(request("watch", ["r2"], {}, WATCH))) void item;
  })();
  const second = await pipe.waitFor((m) => m.t === "call" && m["id"] !== call["id"]);
  pipe.feed({ t: "error", id: second["id"], error: { code: "not-found", status: 404, message: "no robot r2" } });
  await assert.rejects(failing, (e) => e instanceof NotFound && /no robot r2/.test(e.message));
});

test("a stream item past the granted credit fails the call and cancels it", async () => {
  const pipe = new FakePipe();
  const session = new Session(pipe, { window: { items: 2, bytes: 1000 } });
  const iterator = session.stream(request("watch", ["r1"], {}, WATCH))[Symbol.asyncIterator]();
  const call = await pipe.waitFor((m) => m.t === "call");
  for (let i = 0; i < 3; i++) pipe.feed({ t: "item", id: call["id"], value: i }, 5);
  await assert.rejects(iterator.next(), (e) => e instanceof InvalidRequest && /past the credit/.test(e.message));
  assert.deepEqual(pipe.of("cancel"), [{ t: "cancel", id: call["id"] }]);
});

const UPLOAD: OperationSpec = { name: "upload", params: ["name", "parts"], stream: "client", streamParam: 1 };

test("a client stream waits for ready, sends within its credit, then end", async () => {
  const { pipe, session } = open();
  let pulled = 0;
  function* parts(): Generator<string> {
    for (let i = 0; i < 5; i++) {
      pulled++;
      yield `part${i}`;
    }
  }
  const result = session.call(request("upload", ["f", parts()], {}, UPLOAD));
  const call = await pipe.waitFor((m) => m.t === "call");
  assert.deepEqual(call["args"], ["f", null]);
  await settle();
  assert.equal(pipe.of("send").length, 0, "nothing is sent before ready");
  assert.equal(pulled, 0, "the source is not read without credit");
  pipe.feed({ t: "ready", id: call["id"], items: 2, bytes: 1000 });
  await pipe.waitFor(() => pipe.of("send").length === 2, "two sends");
  await settle();
  assert.equal(pipe.of("send").length, 2, "no more than the credit");
  pipe.feed({ t: "ready", id: call["id"], items: 10, bytes: 1000 });
  await pipe.waitFor((m) => m.t === "end", "end");
  assert.deepEqual(pipe.of("send").map((m) => m["value"]), ["part0", "part1", "part2", "part3", "part4"]);
  pipe.feed({ t: "result", id: call["id"], value: 5 });
  assert.equal(await result, 5);
});

test("a client stream's byte credit counts each item's encoded size", async () => {
  const { pipe, session } = open();
  const result = session.call(request("upload", ["f", ["x".repeat(100), "y", "z"]], {}, UPLOAD));
  const call = await pipe.waitFor((m) => m.t === "call");
  pipe.feed({ t: "ready", id: call["id"], items: 10, bytes: 50 });
  await pipe.waitFor((m) => m.t === "send");
  await settle();
  assert.equal(pipe.of("send").length, 1, "the first item spent all the byte credit");
  pipe.feed({ t: "ready", id: call["id"], items: 0, bytes: 500 });
  await pipe.waitFor((m) => m.t === "end");
  pipe.feed({ t: "result", id: call["id"], value: 3 });
  assert.equal(await result, 3);
});

test("a two-way stream sends and receives on one id", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "echo", params: ["words"], stream: "both", streamParam: 0 };
  async function* words(): AsyncGenerator<string> {
    yield "a";
    yield "b";
  }
  const got: unknown[] = [];
  const done = (async () => {
    for await (const item of session.stream(request("echo", [words()], {}, spec))) got.push(item);
  })();
  const call = await pipe.waitFor((m) => m.t === "call");
  assert.ok(pipe.of("credit").length === 1);
  pipe.feed({ t: "ready", id: call["id"], items: 256, bytes: 4096 });
  await pipe.waitFor((m) => m.t === "end");
  for (const send of pipe.of("send")) pipe.feed({ t: "item", id: call["id"], value: String(send["value"]).toUpperCase() });
  pipe.feed({ t: "result", id: call["id"], value: null });
  await done;
  assert.deepEqual(got, ["A", "B"]);
});

test("the backend's invoke runs the served handler, bytes shaped, and its result goes back", async () => {
  const { pipe, session } = open();
  const spec: OperationSpec = { name: "save_blob", params: ["name", "data"], args: [null, "bytes"] };
  const seen: unknown[] = [];
  session.serve("files", (method) =>
    method === "save_blob" ? { spec, fn: (name: unknown, data: unknown, ctx: unknown) => { seen.push(name, data, (ctx as HandlerContext).activityId); return (data as Uint8Array).length; } } : undefined,
  );
  pipe.feed({ t: "invoke", id: 4, channel: "files", method: "save_blob", args: ["a", "AQID"], activity_id: "b1" });
  const result = await pipe.waitFor((m) => m.t === "result");
  assert.deepEqual(result, { t: "result", id: 4, value: 3 });
  assert.deepEqual(seen, ["a", new Uint8Array([1, 2, 3]), "b1"]);
});

test("a served handler's error goes back with its code; an unknown channel is not-found", async () => {
  const { pipe, session } = open();
  session.serve("prompts", (method) => {
    if (method === "confirm") return { spec: undefined, fn: () => { throw new ApplicationError("application", "the user said no", { status: 422, remoteName: "Refused", details: { why: "no" } }); } };
    if (method === "crash") return { spec: undefined, fn: async () => { throw new RangeError("boom"); } };
    return undefined;
  });
  pipe.feed({ t: "invoke", id: 1, channel: "prompts", method: "confirm", args: ["ok?"], activity_id: "c1" });
  pipe.feed({ t: "invoke", id: 2, channel: "prompts", method: "crash", args: [] });
  pipe.feed({ t: "invoke", id: 3, channel: "nobody", method: "x", args: [] });
  await pipe.waitFor(() => pipe.of("error").length === 3, "three errors");
  const [e1, e2, e3] = [1, 2, 3].map((id) => pipe.of("error").find((m) => m["id"] === id)?.["error"] as Record<string, unknown>);
  assert.deepEqual(e1, { code: "application", status: 422, name: "Refused", message: "the user said no", details: { why: "no" }, activity_id: "c1" });
  assert.equal(e2?.["code"], "internal");
  assert.equal(e2?.["name"], "RangeError");
  assert.equal(e2?.["message"], "boom");
  assert.equal(e3?.["code"], "not-found");
  assert.match(String(e3?.["message"]), /serves no channel "nobody"/);
});

test("the backend's cancel aborts the handler's signal, and nothing is answered", async () => {
  const { pipe, session } = open();
  let aborted: unknown = null;
  let release!: () => void;
  session.serve("prompts", () => ({
    spec: undefined,
    fn: (...args: unknown[]) => {
      const ctx = args[args.length - 1] as HandlerContext;
      ctx.signal.addEventListener("abort", () => { aborted = ctx.signal.reason; });
      return new Promise<string>((resolve) => { release = () => resolve("late"); });
    },
  }));
  pipe.feed({ t: "invoke", id: 9, channel: "prompts", method: "ask", args: [] });
  await settle();
  pipe.feed({ t: "cancel", id: 9 });
  assert.ok(aborted instanceof DOMException);
  release();
  await settle();
  assert.equal(pipe.of("result").length + pipe.of("error").length, 0);
});

test("an invoke's deadline aborts the handler and answers deadline-exceeded", async () => {
  const { pipe, session } = open();
  let signal: AbortSignal | null = null;
  session.serve("prompts", () => ({ spec: undefined, fn: (ctx: unknown) => { signal = (ctx as HandlerContext).signal; return new Promise(() => {}); } }));
  pipe.feed({ t: "invoke", id: 2, channel: "prompts", method: "ask", args: [], timeout_ms: 20 });
  const error = await pipe.waitFor((m) => m.t === "error");
  assert.equal((error["error"] as Record<string, unknown>)["code"], "deadline-exceeded");
  assert.ok((signal as AbortSignal | null)?.aborted);
});

test("notifications reach the channel's listeners; one that throws is reported, not thrown", async () => {
  const { pipe, session, errors } = open();
  const heard: unknown[] = [];
  const stop = session.listen("events", (method, args) => heard.push([method, ...args]));
  session.listen("events", () => { throw new Error("listener bug"); });
  pipe.feed({ t: "notify", channel: "events", method: "element_moved", args: ["e1", { x: 1, y: 2 }] });
  pipe.feed({ t: "notify", channel: "other", method: "x", args: [] });
  stop();
  pipe.feed({ t: "notify", channel: "events", method: "element_moved", args: ["e2", null] });
  assert.deepEqual(heard, [["element_moved", "e1", { x: 1, y: 2 }]]);
  assert.equal(errors.length, 2);
  assert.match(errors[0]?.message ?? "", /listener bug/);
});

test("malformed messages from the backend do not throw out of onmessage", async () => {
  const { pipe, session, errors } = open();
  const result = session.call(request("a", []));
  const call = await pipe.waitFor((m) => m.t === "call");
  const junk: unknown[] = [null, "text", 42, [], { t: 5 }, { t: "whatever" }, { t: "result" }, { t: "result", id: "1" }, { t: "item", id: -1 },
    { t: "error", id: call["id"], error: "not an object" }, { t: "invoke", id: "x" }, { t: "notify", channel: 1 }, { t: "progress", id: call["id"], done: "x" }];
  for (const message of junk.slice(0, -4)) assert.doesNotThrow(() => pipe.feed(message));
  for (const message of junk.slice(-3)) assert.doesNotThrow(() => pipe.feed(message));
  assert.ok(errors.length >= 8);
  assert.ok(pipe.of("error").some((m) => m["id"] === null), "a malformed invoke is answered bad-request");
  pipe.feed(junk[junk.length - 4]);
  const error = await result.then(() => null, (e: unknown) => e);
  assert.ok(error instanceof TetherError);
  assert.match(error.message, /malformed error/);
  pipe.feed({ t: "error", id: null, error: { code: "bad-request", status: 400, message: "what you sent" } });
  assert.match(errors[errors.length - 1]?.message ?? "", /what you sent/);
});

test("a closed pipe rejects waiting calls with CallMayHaveRun, later ones with ConnectionClosed, and resolves closed", async () => {
  const { pipe, session } = open();
  const states: string[] = [];
  session.onstatechange = (s) => states.push(s);
  const waiting = session.call(request("a", []));
  await pipe.waitFor((m) => m.t === "call");
  const why = new ConnectionClosed("the server is shutting down", { closeCode: 1001 });
  pipe.drop(why);
  const error = await waiting.then(() => null, (e: unknown) => e);
  assert.ok(error instanceof CallMayHaveRun);
  assert.equal(error.closeCode, 1001);
  assert.match(error.message, /may or may not have run.*shutting down/);
  assert.equal(await session.closed, why);
  assert.equal(session.state, "closed");
  assert.deepEqual(states, ["closed"]);
  const later = await session.call(request("b", [])).then(() => null, (e: unknown) => e);
  assert.ok(later instanceof ConnectionClosed && !(later instanceof CallMayHaveRun));
});

test("close() ends the session and rejects what waits", async () => {
  const { pipe, session } = open();
  const waiting = session.call(request("a", []));
  await session.close();
  await assert.rejects(waiting, ConnectionClosed);
  assert.ok(pipe.ended);
  assert.match((await session.closed).message, /closed the session/);
});
