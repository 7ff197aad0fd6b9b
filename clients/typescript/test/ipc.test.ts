import assert from "node:assert/strict";
import { test } from "node:test";

import { IncompatibleVersion, NotFound } from "../src/errors.js";
import { connectIpc } from "../src/ipc.js";
import type { HandlerContext } from "../src/session.js";
import type { IpcChannelRef, NotificationRef } from "../src/types.js";
import { FakeWebSocket, settle } from "./fakes.js";

interface Editor {
  moveElement(elementId: string, dx: number, dy: number): Promise<{ x: number; y: number }>;
}
const Editor: IpcChannelRef<Editor> = {
  kind: "ipc",
  channel: "editor",
  version: "1.0.0",
  methods: { moveElement: { name: "move_element", params: ["element_id", "dx", "dy"] } },
};
interface Events {
  elementMoved?(elementId: string, data: Uint8Array): void;
}
const Events: NotificationRef<Events> = {
  kind: "notification",
  channel: "editor-events",
  version: "1.0.0",
  methods: { elementMoved: { name: "element_moved", params: ["element_id", "data"], args: [null, "bytes"] } },
};
interface Prompts {
  confirm(question: string): Promise<boolean>;
}
interface PromptsHandler {
  confirm(question: string, ctx?: HandlerContext): boolean | Promise<boolean>;
}
const Prompts: IpcChannelRef<Prompts, PromptsHandler> = {
  kind: "ipc",
  channel: "editor-prompts",
  version: "1.0.0",
  methods: { confirm: { name: "confirm", params: ["question"] } },
};

async function open(served: Record<string, string> = { editor: "1.0.0" }) {
  FakeWebSocket.instances = [];
  const connecting = connectIpc("ws://127.0.0.1:1/rpc/ws", { channels: [Editor], application: { id: "ed", version: "2" }, authorization: "Bearer t", WebSocket: FakeWebSocket });
  const socket = FakeWebSocket.instances[0] as FakeWebSocket;
  socket.open();
  socket.text({ t: "welcome", protocol: 1, session_id: "s9", channels: served, interfaces: {}, binary: true });
  return { connecting, socket };
}

test("the hello names the backend's channels; invokes carry activity_id and traceparent at the top level", async () => {
  const { connecting, socket } = await open();
  const session = await connecting;
  assert.deepEqual(socket.json()[0], { t: "hello", protocol: 1, mode: "ipc", channels: { editor: "1.0.0" }, application: { id: "ed", version: "2" }, authorization: "Bearer t", binary: true });
  assert.equal(session.sessionId, "s9");
  const editor = session.proxy(Editor);
  const moving = editor.moveElement("e1", 1, 2);
  const invoke = socket.json()[1] as Record<string, unknown>;
  assert.equal(invoke["t"], "invoke");
  assert.equal(invoke["channel"], "editor");
  assert.equal(invoke["method"], "move_element");
  assert.deepEqual(invoke["args"], ["e1", 1, 2]);
  assert.equal(typeof invoke["activity_id"], "string");
  assert.match(String(invoke["traceparent"]), /^00-/);
  assert.equal(invoke["stream"], undefined);
  socket.text({ t: "result", id: invoke["id"], value: { x: 1, y: 2 } });
  assert.deepEqual(await moving, { x: 1, y: 2 });
});

test("listen hears notifications by their camelCase name, bytes shaped; stop ends it", async () => {
  const { connecting, socket } = await open();
  const session = await connecting;
  const heard: unknown[] = [];
  const stop = session.listen(Events, { elementMoved: (id, data) => heard.push([id, data]) });
  socket.text({ t: "notify", channel: "editor-events", method: "element_moved", args: ["e1", "AQI="] });
  stop();
  socket.text({ t: "notify", channel: "editor-events", method: "element_moved", args: ["e2", "AQI="] });
  assert.deepEqual(heard, [["e1", new Uint8Array([1, 2])]]);
});

test("serve answers the backend's invokes; its cancel aborts the handler's signal", async () => {
  const { connecting, socket } = await open();
  const session = await connecting;
  let signal: AbortSignal | undefined;
  session.serve(Prompts, {
    confirm: (question, ctx) => {
      signal = ctx?.signal;
      return question === "wait" ? new Promise<boolean>(() => {}) : question.length > 2;
    },
  });
  socket.text({ t: "invoke", id: 1, channel: "editor-prompts", method: "confirm", args: ["sure?"] });
  await settle();
  assert.deepEqual(socket.json().find((m) => m["t"] === "result"), { t: "result", id: 1, value: true });
  socket.text({ t: "invoke", id: 2, channel: "editor-prompts", method: "confirm", args: ["wait"] });
  socket.text({ t: "cancel", id: 2 });
  assert.ok(signal?.aborted);
});

test("untyped invoke says stream false; notify goes out", async () => {
  const { connecting, socket } = await open();
  const session = await connecting;
  const result = session.invoke("editor", "validate_all", [], { timeoutMs: 1000 });
  const invoke = socket.json()[1] as Record<string, unknown>;
  assert.equal(invoke["stream"], false);
  assert.equal(invoke["timeout_ms"], 1000);
  socket.text({ t: "result", id: invoke["id"], value: 0 });
  assert.equal(await result, 0);
  await session.notify("frontend-events", "hello", [1]);
  assert.deepEqual(socket.json()[2], { t: "notify", channel: "frontend-events", method: "hello", args: [1] });
});

test("state, onstatechange and closed follow the connection's end", async () => {
  const { connecting, socket } = await open();
  const session = await connecting;
  assert.equal(session.state, "connected");
  const states: string[] = [];
  session.onstatechange = (s) => states.push(s);
  const waiting = session.proxy(Editor).moveElement("e", 0, 0);
  socket.serverClose(1008, "session expired");
  await assert.rejects(waiting, /may or may not have run/);
  const why = await session.closed;
  assert.match(why.message, /session expired/);
  assert.equal(session.state, "closed");
  assert.deepEqual(states, ["closed"]);
});

test("a channel the backend does not serve, or serves at an incompatible version, fails the connect", async () => {
  const missing = await open({});
  await assert.rejects(missing.connecting, (e) => e instanceof NotFound && /does not serve the channel editor/.test(e.message));
  const old = await open({ editor: "2.0.0" });
  await assert.rejects(old.connecting, (e) => e instanceof IncompatibleVersion && /2\.0\.0/.test(e.message) && /1\.0\.0/.test(e.message));
});

test("a notification ref in channels is refused: the hello lists the backend's IPC channels", async () => {
  await assert.rejects(connectIpc("ws://x/rpc/ws", { channels: [Events as unknown as IpcChannelRef<unknown>], WebSocket: FakeWebSocket }), /refs of kind "ipc"/);
});

test("a listener that throws or rejects is reported to onError, and the others still hear", async () => {
  FakeWebSocket.instances = [];
  const errors: Error[] = [];
  const connecting = connectIpc("ws://127.0.0.1:1/rpc/ws", { WebSocket: FakeWebSocket, onError: (e) => errors.push(e) });
  const socket = FakeWebSocket.instances[0] as FakeWebSocket;
  socket.open();
  socket.text({ t: "welcome", protocol: 1, session_id: "s", channels: {}, interfaces: {} });
  const session = await connecting;
  const heard: string[] = [];
  session.listen(Events, { elementMoved: () => { throw new Error("sync bug"); } });
  session.listen(Events, { elementMoved: async () => { throw new Error("async bug"); } });
  session.listen(Events, { elementMoved: (id) => { heard.push(id); } });
  socket.text({ t: "notify", channel: "editor-events", method: "element_moved", args: ["e1", null] });
  await settle();
  assert.deepEqual(heard, ["e1"]);
  assert.deepEqual(errors.map((e) => /(sync|async) bug/.exec(e.message)?.[0]).sort(), ["async bug", "sync bug"]);
});
