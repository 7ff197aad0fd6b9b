import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { decodeFrame, encodeFrame } from "../src/codec.js";
import type { Message } from "../src/codec.js";
import { resolveCall } from "../src/context.js";
import type { CallOptions } from "../src/context.js";
import {
  ApplicationError,
  CallMayHaveRun,
  ConnectionClosed,
  DeadlineExceeded,
  NotFound,
  isApplicationError,
} from "../src/errors.js";
import { connectHttpRpc } from "../src/rpc_http.js";
import type { RpcRequest, RpcTransport } from "../src/transport.js";
import type { OperationSpec } from "../src/types.js";

interface Seen {
  url: string;
  method: string;
  headers: Headers;
  body: Uint8Array | null;
  signal: AbortSignal | null;
}

type Handler = (request: Seen) => Response | Promise<Response>;

const realFetch = globalThis.fetch;
let seen: Seen[] = [];

function fakeFetch(handler: Handler): void {
  seen = [];
  globalThis.fetch = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const body = init.body === undefined || init.body === null ? null : new Uint8Array(await new Response(init.body).arrayBuffer());
    const request: Seen = {
      url: String(input),
      method: init.method ?? "GET",
      headers: new Headers(init.headers),
      body,
      signal: init.signal ?? null,
    };
    seen.push(request);
    return handler(request);
  };
}

afterEach(() => {
  globalThis.fetch = realFetch;
});

const DESCRIBED = {
  protocol: 1,
  interfaces: {
    RobotWorldReadRpcInterface: { version: "1.0.0", operations: ["count_robots", "watch", "steer", "upload"], streams: { watch: "server", steer: "two-way", upload: "client" } },
  },
};

function json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), { status, headers: { "Content-Type": "application/json", ...headers } });
}

function text(body: Uint8Array | null): string {
  return new TextDecoder().decode(body ?? new Uint8Array());
}

/** A server: GET {prefix}/ describes; calls go to `calls`. */
function serve(calls: Handler): void {
  fakeFetch((request) => (request.url === "http://h:1/rpc/" ? json(DESCRIBED) : calls(request)));
}

function request(op: string, args: unknown[], options: CallOptions = {}, spec?: OperationSpec): RpcRequest {
  return { iface: "RobotWorldReadRpcInterface", version: "1.0.0", op, args, call: resolveCall(options), spec };
}

async function connect(): Promise<RpcTransport> {
  return connectHttpRpc("http://h:1/rpc/", { application: { id: "app", version: "2.0" }, sessionId: "s1", authorization: "Bearer t" });
}

test("connect reads what the backend serves", async () => {
  serve(() => json(null));
  const rpc = await connect();
  assert.deepEqual(rpc.interfaces["RobotWorldReadRpcInterface"], { version: "1.0.0", operations: ["count_robots", "watch", "steer", "upload"] });
  assert.equal(seen[0]?.headers.get("Authorization"), "Bearer t");
});

test("connect: an error body is its typed error; a page that is not tether's is a clear ConnectionClosed", async () => {
  fakeFetch(() => json({ error: { code: "unauthorized", status: 401, message: "no" } }, 401));
  await assert.rejects(connect(), (e: unknown) => e instanceof Error && e.name === "Unauthorized" && (e as ConnectionClosed).status === 401);
  fakeFetch(() => new Response("<html>hello</html>", { status: 200, headers: { "Content-Type": "text/html" } }));
  await assert.rejects(connect(), (e: unknown) => e instanceof ConnectionClosed && /did not answer what a tether backend serves/.test(e.message) && /<html>/.test(e.message));
  fakeFetch(() => new Response("not here", { status: 404 }));
  await assert.rejects(connect(), (e: unknown) => e instanceof ConnectionClosed && /404/.test(e.message) && /not a tether answer/.test(e.message));
  fakeFetch(() => Promise.reject(new TypeError("fetch failed")));
  await assert.rejects(connect(), (e: unknown) => e instanceof ConnectionClosed && !(e instanceof CallMayHaveRun) && /could not reach/.test(e.message));
  await assert.rejects(connectHttpRpc("ws://h:1/rpc"), TypeError);
});

test("a call: its path, body, and every header of its context", async () => {
  serve(() => json(3));
  const rpc = await connect();
  const result = await rpc.call(request("count_robots", [{ key: "m1" }], {
    activityId: "2c1e1a6e-8c1f-4b5e-9a4f-0d3c2b1a0f9e",
    metadata: { tenant: "acme", note: "a b,c=d" },
    timeoutMs: 5000,
  }));
  assert.equal(result, 3);
  const call = seen[1] as Seen;
  assert.equal(call.url, "http://h:1/rpc/RobotWorldReadRpcInterface/1.0.0/count_robots");
  assert.equal(call.method, "POST");
  assert.equal(text(call.body), '[{"key":"m1"}]');
  const h = call.headers;
  assert.equal(h.get("Content-Type"), "application/json");
  assert.equal(h.get("Accept"), "application/json, application/vnd.tether.frame");
  assert.equal(h.get("X-Correlation-ID"), "2c1e1a6e-8c1f-4b5e-9a4f-0d3c2b1a0f9e");
  assert.match(h.get("traceparent") ?? "", /^00-2c1e1a6e8c1f4b5e9a4f0d3c2b1a0f9e-[0-9a-f]{16}-01$/);
  assert.equal(h.get("baggage"), "tenant=acme,note=a%20b%2Cc%3Dd");
  assert.equal(h.get("X-Timeout-Ms"), "5000");
  assert.equal(h.get("X-Session-Id"), "s1");
  assert.equal(h.get("X-Application-Id"), "app");
  assert.equal(h.get("X-Application-Version"), "2.0");
  assert.equal(h.get("Authorization"), "Bearer t");
  assert.equal(h.get("X-Protocol-Version"), "1");
});

test("bytes: arguments go as a frame {args}; a frame answer and base64 in JSON both come back as Uint8Array", async () => {
  const spec: OperationSpec = { name: "mirror", params: ["data"], result: "bytes" };
  serve((r) => {
    assert.equal(r.headers.get("Content-Type"), "application/vnd.tether.frame");
    const message = decodeFrame(r.body as Uint8Array);
    assert.deepEqual(message["args"], [new Uint8Array([1, 2, 3])]);
    const frame = encodeFrame({ t: "result", id: 0, value: new Uint8Array([3, 2, 1]) }) as Uint8Array<ArrayBuffer>;
    return new Response(frame, { headers: { "Content-Type": "application/vnd.tether.frame" } });
  });
  const rpc = await connect();
  assert.deepEqual(await rpc.call(request("mirror", [new Uint8Array([1, 2, 3])], {}, spec)), new Uint8Array([3, 2, 1]));
  serve(() => json("AwIB"));
  assert.deepEqual(await rpc.call(request("mirror", ["AQID"], {}, spec)), new Uint8Array([3, 2, 1]));
});

test("an error body is the typed error; an application error keeps its name and details", async () => {
  serve(() =>
    json({ error: { code: "application", status: 422, name: "RobotNotFound", message: "no robot r9", details: { fields: { robot_id: "r9" } }, activity_id: "a1" } }, 422),
  );
  const rpc = await connect();
  const error = await rpc.call(request("count_robots", [])).then(
    () => assert.fail("expected an error"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ApplicationError);
  assert.ok(isApplicationError(error, "RobotNotFound"));
  assert.equal(error.status, 422);
  assert.equal(error.activityId, "a1");
  assert.deepEqual(error.details, { fields: { robot_id: "r9" } });
  serve(() => json({ error: { code: "not-found", status: 404, message: "no op" } }, 404));
  await assert.rejects(rpc.call(request("count_robots", [])), NotFound);
});

test("a network failure, or a gateway's 502/504 that is not tether's, may have run the call", async () => {
  const rpc = await (serve(() => json(1)), connect());
  serve(() => Promise.reject(new TypeError("fetch failed")));
  await assert.rejects(rpc.call(request("count_robots", [])), (e: unknown) => e instanceof CallMayHaveRun && /may have run/.test(e.message));
  for (const status of [502, 504]) {
    serve(() => new Response("Bad Gateway", { status }));
    await assert.rejects(rpc.call(request("count_robots", [])), (e: unknown) => e instanceof CallMayHaveRun && e.status === status);
  }
  serve(() => json({ error: { code: "deadline-exceeded", status: 504, message: "late" } }, 504));
  await assert.rejects(rpc.call(request("count_robots", [])), DeadlineExceeded);
});

/** A handler that answers only when its request is aborted (it rejects as fetch does). */
function hanging(): Handler {
  return (r) =>
    new Promise((_resolve, reject) => {
      if (r.signal?.aborted) reject(r.signal.reason);
      r.signal?.addEventListener("abort", () => reject(r.signal?.reason), { once: true });
    });
}

test("aborting the signal aborts the fetch and rejects with the signal's reason", async () => {
  const rpc = await (serve(() => json(1)), connect());
  serve(hanging());
  const controller = new AbortController();
  const pending = rpc.call(request("count_robots", [], { signal: controller.signal }));
  await new Promise((resolve) => setImmediate(resolve));
  const reason = new DOMException("the user left", "AbortError");
  controller.abort(reason);
  await assert.rejects(pending, (e: unknown) => e === reason);
  assert.equal(seen[0]?.signal?.aborted, true);
  // an already-aborted signal: nothing is answered
  await assert.rejects(rpc.call(request("count_robots", [], { signal: AbortSignal.abort("gone") })), (e: unknown) => e === "gone");
});

test("timeoutMs rejects locally with DeadlineExceeded and aborts the fetch", async () => {
  const rpc = await (serve(() => json(1)), connect());
  serve(hanging());
  await assert.rejects(rpc.call(request("count_robots", [], { timeoutMs: 20 })), (e: unknown) => e instanceof DeadlineExceeded && /20 ms/.test(e.message));
  assert.equal(seen[0]?.headers.get("X-Timeout-Ms"), "20");
  assert.equal(seen[0]?.signal?.aborted, true);
});

test("close rejects waiting calls with ConnectionClosed, and refuses new ones", async () => {
  const rpc = await (serve(() => json(1)), connect());
  serve(hanging());
  const pending = rpc.call(request("count_robots", []));
  await new Promise((resolve) => setImmediate(resolve));
  await rpc.close();
  await assert.rejects(pending, ConnectionClosed);
  await assert.rejects(rpc.call(request("count_robots", [])), ConnectionClosed);
});

function records(messages: (Message | Uint8Array)[]): Uint8Array<ArrayBuffer> {
  const parts = messages.map((m) => (m instanceof Uint8Array ? m : new TextEncoder().encode(JSON.stringify(m))));
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  let at = 0;
  for (const part of parts) {
    new DataView(out.buffer).setUint32(at, part.length, false);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}

/** A body that hands out `bytes` `size` bytes at a time (records split across reads). */
function trickle(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) controller.close();
      else controller.enqueue(bytes.slice(at, (at += size)));
    },
  });
}

test("a server stream: records read as they come (split anywhere), bytes items from frames, the end", async () => {
  const spec: OperationSpec = { name: "watch", params: [], stream: "server", result: { fields: { data: "bytes" } } };
  const body = records([
    { t: "item", value: { n: 1, data: "AQ==" } },
    encodeFrame({ t: "item", value: { n: 2, data: new Uint8Array([2]) } }) as Uint8Array,
    { t: "result", value: null },
  ]);
  const rpc = await (serve(() => json(1)), connect());
  for (const size of [1, 3, 7, body.length]) {
    serve((r) => {
      assert.match(r.headers.get("Accept") ?? "", /application\/vnd\.tether\.stream/);
      return new Response(trickle(body, size), { headers: { "Content-Type": "application/vnd.tether.stream" } });
    });
    const items: unknown[] = [];
    for await (const item of rpc.stream(request("watch", [], {}, spec))) items.push(item);
    assert.deepEqual(items, [{ n: 1, data: new Uint8Array([1]) }, { n: 2, data: new Uint8Array([2]) }]);
  }
});

test("a server stream that fails after an item throws the typed error; one cut short may have run further", async () => {
  const spec: OperationSpec = { name: "watch", params: [], stream: "server" };
  const rpc = await (serve(() => json(1)), connect());
  serve(() => new Response(records([{ t: "item", value: 1 }, { t: "error", error: { code: "application", status: 422, name: "Boom", message: "b" } }]), { headers: { "Content-Type": "application/vnd.tether.stream" } }));
  const items: unknown[] = [];
  await assert.rejects(async () => {
    for await (const item of rpc.stream(request("watch", [], {}, spec))) items.push(item);
  }, (e: unknown) => isApplicationError(e, "Boom"));
  assert.deepEqual(items, [1]);
  serve(() => new Response(records([{ t: "item", value: 1 }]), { headers: { "Content-Type": "application/vnd.tether.stream" } }));
  await assert.rejects(async () => {
    for await (const item of rpc.stream(request("watch", [], {}, spec))) void item;
  }, CallMayHaveRun);
});

test("leaving a server stream early aborts its fetch (the server cancels the generator)", async () => {
  const spec: OperationSpec = { name: "watch", params: [], stream: "server" };
  const rpc = await (serve(() => json(1)), connect());
  const endless = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(records([{ t: "item", value: 7 }]));
    },
  });
  serve(() => new Response(endless, { headers: { "Content-Type": "application/vnd.tether.stream" } }));
  let count = 0;
  for await (const item of rpc.stream(request("watch", [], {}, spec))) {
    assert.equal(item, 7);
    if (++count === 3) break;
  }
  assert.equal(seen[0]?.signal?.aborted, true);
});

test("a two-way stream is refused without sending anything; untyped, the backend's description says so", async () => {
  const rpc = await (serve(() => json(1)), connect());
  serve(() => json(1));
  await assert.rejects(rpc.call(request("steer", [])), (e: unknown) => e instanceof NotFound && /WebSocket/.test(e.message));
  await assert.rejects(async () => {
    for await (const item of rpc.stream(request("steer", [], {}, { name: "steer", params: ["c"], stream: "both", streamParam: 0 }))) void item;
  }, NotFound);
  assert.equal(seen.length, 0);
});

test("a client stream: arguments then every item, as records in one body; the result as a unary call's", async () => {
  const spec: OperationSpec = { name: "upload", params: ["name", "parts"], stream: "client", streamParam: 1 };
  const rpc = await (serve(() => json(1)), connect());
  serve((r) => {
    assert.equal(r.headers.get("Content-Type"), "application/vnd.tether.stream");
    const body = r.body as Uint8Array;
    const found: unknown[] = [];
    for (let at = 0; at < body.length; ) {
      const length = new DataView(body.buffer, body.byteOffset + at, 4).getUint32(0, false);
      const part = body.subarray(at + 4, at + 4 + length);
      found.push(part[0] === 0 ? decodeFrame(part) : JSON.parse(new TextDecoder().decode(part)));
      at += 4 + length;
    }
    assert.deepEqual(found, [["f.bin", null], "a", { value: new Uint8Array([9]), t: "" }, 3]);
    return json(3);
  });
  async function* parts() {
    yield "a";
    yield new Uint8Array([9]);
    yield 3;
  }
  assert.equal(await rpc.call(request("upload", ["f.bin", parts()], {}, spec)), 3);
});

test("a long-running call (202 + Location) is polled until its answer", async () => {
  const rpc = await (serve(() => json(1)), connect());
  let polls = 0;
  serve((r) => {
    if (r.method === "POST") return json({ status: "running" }, 202, { Location: "/rpc/operations/abc", "Retry-After": "0" });
    assert.equal(r.url, "http://h:1/rpc/operations/abc");
    assert.equal(r.headers.get("Authorization"), "Bearer t");
    return ++polls < 2 ? json({ status: "running" }, 202, { "Retry-After": "0" }) : json(42);
  });
  assert.equal(await rpc.call(request("count_robots", [])), 42);
  assert.equal(polls, 2);
});

test("aborting a long-running call while it is polled DELETEs the operation", async () => {
  const rpc = await (serve(() => json(1)), connect());
  const controller = new AbortController();
  serve((r) => {
    if (r.method === "POST") return json({ status: "running" }, 202, { Location: "/rpc/operations/xyz", "Retry-After": "1" });
    return json(null, 204);
  });
  const pending = rpc.call(request("count_robots", [], { signal: controller.signal }));
  await new Promise((resolve) => setImmediate(resolve));
  controller.abort("stop");
  await assert.rejects(pending, (e: unknown) => e === "stop");
  await new Promise((resolve) => setImmediate(resolve));
  const deleted = seen.filter((r) => r.method === "DELETE");
  assert.deepEqual(deleted.map((r) => [r.url, r.headers.get("Authorization")]), [["http://h:1/rpc/operations/xyz", "Bearer t"]]);
});

test("a server stream answered as ndjson (no records) is read too", async () => {
  const rpc = await (serve(() => json(1)), connect());
  const body = '{"t":"item","value":1}\n\n{"t":"item","value":2}\n{"t":"result","value":null}';
  serve(() => new Response(trickle(new TextEncoder().encode(body), 5), { headers: { "Content-Type": "application/x-ndjson" } }));
  const items: unknown[] = [];
  for await (const item of rpc.stream(request("watch", [], {}, { name: "watch", params: [], stream: "server" }))) items.push(item);
  assert.deepEqual(items, [1, 2]);
});
