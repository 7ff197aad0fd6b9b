import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeFrame, encodeFrame } from "../src/codec.js";
import type { Message } from "../src/codec.js";
import { ConnectionClosed, Unauthorized } from "../src/errors.js";
import { openWebSocket } from "../src/ws.js";
import { FakeWebSocket, settle } from "./fakes.js";

const WELCOME = { t: "welcome", protocol: 1, session_id: "s1", channels: {}, interfaces: { R: { version: "1.0.0", operations: ["a"] } }, binary: true };

function start(hello: Message = { t: "hello", protocol: 1, mode: "rpc" }, options = {}) {
  FakeWebSocket.instances = [];
  const opening = openWebSocket("ws://127.0.0.1:1/rpc/ws", hello, { WebSocket: FakeWebSocket, ...options });
  const socket = FakeWebSocket.instances[0] as FakeWebSocket;
  return { opening, socket };
}

test("the handshake says binary, takes the welcome, and hands over a pipe", async () => {
  const { opening, socket } = start();
  assert.equal(socket.binaryType, "arraybuffer");
  socket.open();
  assert.deepEqual(socket.json()[0], { t: "hello", protocol: 1, mode: "rpc", binary: true });
  socket.text(WELCOME);
  const { welcome, pipe } = await opening;
  assert.equal(welcome.session_id, "s1");
  assert.equal(welcome.binary, true);
  assert.deepEqual(welcome.interfaces["R"], { version: "1.0.0", operations: ["a"] });
  const got: Message[] = [];
  socket.text({ t: "result", id: 1, value: 2 }); // before the session listens: kept
  pipe.onmessage = (m) => got.push(m);
  assert.deepEqual(got, [{ t: "result", id: 1, value: 2 }]);
});

test("messages with bytes go as frames, others as text; frames and text come back as messages", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text(WELCOME);
  const { pipe } = await opening;
  const got: [Message, number | undefined][] = [];
  pipe.onmessage = (m, size) => got.push([m, size]);
  const size = await pipe.send({ t: "call", id: 1, args: [new Uint8Array([1, 2, 3])] });
  const frame = socket.sent[1];
  assert.ok(frame instanceof Uint8Array);
  assert.equal(size, frame.length);
  assert.deepEqual(decodeFrame(frame)["args"], [new Uint8Array([1, 2, 3])]);
  await pipe.send({ t: "cancel", id: 1 });
  assert.equal(socket.sent[2], '{"t":"cancel","id":1}');
  const back = encodeFrame({ t: "result", id: 1, value: new Uint8Array([9, 8]) }) as Uint8Array;
  socket.binary(back);
  socket.binary(new TextEncoder().encode('{"t":"result","id":2,"value":1}'));
  assert.deepEqual(got[0]?.[0], { t: "result", id: 1, value: new Uint8Array([9, 8]) });
  assert.equal(got[0]?.[1], back.length);
  assert.deepEqual(got[1]?.[0], { t: "result", id: 2, value: 1 });
});

test("without binary in the welcome, bytes go as base64 text", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text({ ...WELCOME, binary: false });
  const { pipe } = await opening;
  await pipe.send({ t: "call", id: 1, args: [new Uint8Array([255])] });
  assert.equal(socket.sent[1], '{"t":"call","id":1,"args":["/w=="]}');
});

test("the server's in-envelope ping is answered at once and not passed on", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text({ t: "ping", id: 0 });
  socket.text(WELCOME);
  const { pipe } = await opening;
  const got: Message[] = [];
  pipe.onmessage = (m) => got.push(m);
  socket.text({ t: "ping", id: 7 });
  assert.deepEqual(socket.json().filter((m) => m["t"] === "pong"), [{ t: "pong", id: 0 }, { t: "pong", id: 7 }]);
  assert.deepEqual(got, []);
});

test("a refusal (error with id null) rejects with the backend's error", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text({ t: "error", id: null, error: { code: "unauthorized", status: 401, message: "bad token" } });
  await assert.rejects(opening, (e) => e instanceof Unauthorized && e.message === "bad token");
});

test("a close 1006 before open says the handshake was refused and hints at allowed origins", async () => {
  const { opening, socket } = start();
  socket.serverClose(1006);
  await assert.rejects(opening, (e) => e instanceof ConnectionClosed && e.closeCode === 1006 && /cors_origins/.test(e.message) && /refused the handshake/.test(e.message));
});

test("a close during the session ends the pipe with what the close code means", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text(WELCOME);
  const { pipe } = await opening;
  let why: unknown = null;
  pipe.onclose = (e) => (why = e);
  socket.serverClose(1001, "the server is shutting down");
  assert.ok(why instanceof ConnectionClosed);
  assert.equal((why as ConnectionClosed).closeCode, 1001);
  assert.match((why as ConnectionClosed).message, /shutting down/);
  await assert.rejects(pipe.send({ t: "cancel", id: 1 }), ConnectionClosed);
});

test("close() sends bye on a resumable session and closes the socket", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text({ ...WELCOME, resume_token: "tok" });
  const { pipe } = await opening;
  let closed = false;
  pipe.onclose = () => (closed = true);
  await pipe.close();
  assert.deepEqual(socket.json().at(-1), { t: "bye" });
  assert.equal(socket.closedWith?.[0], 1000);
  assert.ok(closed);
});

test("aborting the handshake rejects with the signal's reason", async () => {
  const controller = new AbortController();
  const { opening, socket } = start(undefined, { signal: controller.signal });
  controller.abort(new Error("page left"));
  await assert.rejects(opening, /page left/);
  await settle();
  assert.ok(socket.closedWith !== null);
});

test("a malformed frame from the backend reaches the session as a message it reports, not an exception", async () => {
  const { opening, socket } = start();
  socket.open();
  socket.text(WELCOME);
  const { pipe } = await opening;
  const got: Message[] = [];
  pipe.onmessage = (m) => got.push(m);
  assert.doesNotThrow(() => socket.text("nonsense{"));
  assert.doesNotThrow(() => socket.binary(new Uint8Array([0, 0, 0, 9, 1])));
  assert.equal(got.length, 2);
  assert.ok(got.every((m) => m.t === "malformed"));
});
