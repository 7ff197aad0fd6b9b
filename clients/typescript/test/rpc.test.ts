import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeFrame } from "../src/codec.js";
import { IncompatibleVersion, NotFound } from "../src/errors.js";
import { connectRpc } from "../src/rpc.js";
import type { RpcInterfaceRef } from "../src/types.js";
import { FakeWebSocket, settle } from "./fakes.js";

interface Robots {
  countRobots(imodel: { key: string }, options?: { signal?: AbortSignal }): Promise<number>;
  watch(robotId: string): AsyncIterable<{ x: number }>;
  snapshot(): Promise<Uint8Array>;
}

const Robots: RpcInterfaceRef<Robots> = {
  kind: "rpc",
  name: "RobotsRpcInterface",
  version: "1.2.0",
  operations: {
    countRobots: { name: "count_robots", params: ["imodel"] },
    watch: { name: "watch", params: ["robot_id"], stream: "server" },
    snapshot: { name: "snapshot", params: [], result: "bytes" },
  },
};

async function connect(served: Record<string, { version: string; operations: string[] }>, interfaces = [Robots]) {
  FakeWebSocket.instances = [];
  const connecting = connectRpc("ws://127.0.0.1:1/rpc/ws", { interfaces, application: { id: "page", version: "1" }, WebSocket: FakeWebSocket });
  const socket = FakeWebSocket.instances[0] as FakeWebSocket;
  socket.open();
  socket.text({ t: "welcome", protocol: 1, session_id: "s", channels: {}, interfaces: served, binary: true });
  return { connecting, socket };
}

const SERVED = { RobotsRpcInterface: { version: "1.3.1", operations: ["count_robots", "watch", "snapshot"] } };

test("a proxy's camelCase method sends the wire name, its args and options", async () => {
  const { connecting, socket } = await connect(SERVED);
  const rpc = await connecting;
  assert.deepEqual(socket.json()[0], { t: "hello", protocol: 1, mode: "rpc", application: { id: "page", version: "1" }, binary: true });
  const robots = rpc.proxy(Robots);
  const counting = robots.countRobots({ key: "m1" });
  const call = socket.json()[1] as Record<string, unknown>;
  assert.equal(call["op"], "count_robots");
  assert.equal(call["iface"], "RobotsRpcInterface");
  assert.equal(call["ver"], "1.2.0");
  assert.deepEqual(call["args"], [{ key: "m1" }]);
  socket.text({ t: "result", id: call["id"], value: 4 });
  assert.equal(await counting, 4);
  assert.deepEqual(Object.keys(rpc.interfaces), ["RobotsRpcInterface"]);
});

test("a stream operation returns an AsyncIterable; bytes in JSON become Uint8Array", async () => {
  const { connecting, socket } = await connect(SERVED);
  const robots = (await connecting).proxy(Robots);
  const snapshot = robots.snapshot();
  const call = socket.json()[1] as Record<string, unknown>;
  socket.text({ t: "result", id: call["id"], value: "AQI=" });
  assert.deepEqual(await snapshot, new Uint8Array([1, 2]));
  const positions: unknown[] = [];
  const watching = (async () => {
    for await (const p of robots.watch("r1")) positions.push(p);
  })();
  await settle();
  const watch = socket.json().find((m) => m["op"] === "watch") as Record<string, unknown>;
  assert.ok(socket.json().some((m) => m["t"] === "credit" && m["id"] === watch["id"]));
  socket.text({ t: "item", id: watch["id"], value: { x: 1 } });
  socket.text({ t: "result", id: watch["id"], value: null });
  await watching;
  assert.deepEqual(positions, [{ x: 1 }]);
});

test("an interface the backend does not serve is NotFound at connect, naming what it serves", async () => {
  const { connecting, socket } = await connect({ Other: { version: "1.0.0", operations: [] } });
  await assert.rejects(connecting, (e) => e instanceof NotFound && /does not serve the interface RobotsRpcInterface \(it serves Other\)/.test(e.message));
  await settle();
  assert.ok(socket.closedWith !== null, "the connection is closed");
});

test("an incompatible version names both versions and what to do", async () => {
  const { connecting } = await connect({ RobotsRpcInterface: { version: "2.0.0", operations: [] } });
  await assert.rejects(connecting, (e) => {
    assert.ok(e instanceof IncompatibleVersion);
    assert.match(e.message, /serves RobotsRpcInterface 2\.0\.0/);
    assert.match(e.message, /built against 1\.2\.0/);
    assert.match(e.message, /regenerate the page's stubs/);
    assert.deepEqual(e.details, { name: "RobotsRpcInterface", backend: "2.0.0", frontend: "1.2.0" });
    return true;
  });
});

test("a backend of an older minor version is incompatible with a page built against a newer one", async () => {
  const { connecting } = await connect({ RobotsRpcInterface: { version: "1.1.0", operations: [] } });
  await assert.rejects(connecting, IncompatibleVersion);
});

test("untyped call, options after the arguments, too many arguments refused", async () => {
  const { connecting, socket } = await connect(SERVED);
  const rpc = await connecting;
  const result = rpc.call("RobotsRpcInterface", "1.2.0", "count_robots", [{ key: "x" }], { activityId: "act" }) as Promise<unknown>;
  const call = socket.json()[1] as Record<string, unknown>;
  assert.equal((call["ctx"] as Record<string, unknown>)["activity_id"], "act");
  socket.text({ t: "result", id: call["id"], value: 1 });
  assert.equal(await result, 1);
  const robots = rpc.proxy(Robots) as unknown as Record<string, (...a: unknown[]) => unknown>;
  assert.throws(() => robots["countRobots"]?.({ key: "a" }, {}, 3), /takes 1 argument\(s\) \(imodel\)/);
  await assert.rejects(robots["countRobots"]?.({ key: "a" }, { timeoutMs: -1 }) as Promise<unknown>, /timeoutMs/);
  await rpc.close();
  assert.equal(socket.closedWith?.[0], 1000);
});

test("a URL of another scheme is refused with what is expected", async () => {
  await assert.rejects(connectRpc("ftp://x/rpc"), /ws:, wss:, http: or https:/);
});

test("optional arguments skipped to reach the options are not sent (the backend's defaults apply)", async () => {
  interface Store {
    put(data: Uint8Array, ttl?: number, note?: string, options?: { timeoutMs?: number }): Promise<null>;
  }
  const Store: RpcInterfaceRef<Store> = {
    kind: "rpc",
    name: "Store",
    version: "1.0.0",
    operations: { put: { name: "put", params: ["data", "ttl", "note"] } },
  };
  const { connecting, socket } = await connect({ Store: { version: "1.0.0", operations: ["put"] } }, [Store] as never);
  const rpc = await connecting;
  const store = rpc.proxy(Store);
  const putting = store.put(new Uint8Array([1]), undefined, undefined, { timeoutMs: 5000 });
  const sent = socket.sent[socket.sent.length - 1];
  assert.ok(sent instanceof Uint8Array, "bytes go as a frame");
  const call = decodeFrame(sent);
  assert.deepEqual(call["args"], [new Uint8Array([1])]);
  assert.equal(call["timeout_ms"], 5000);
  socket.text({ t: "result", id: call["id"], value: null });
  assert.equal(await putting, null);
  await rpc.close();
});
