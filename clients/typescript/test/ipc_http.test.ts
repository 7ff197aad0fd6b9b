import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import type { Message } from "../src/codec.js";
import { ConnectionClosed, TetherError, Unavailable } from "../src/errors.js";
import { openHttpIpc } from "../src/ipc_http.js";
import type { ConnectionState, MessagePipe } from "../src/transport.js";

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

interface Seen {
  url: string;
  method: string;
  headers: Headers;
  body: string;
}

/** A fake backend of one session: its event streams are driven by the test. */
class Backend {
  seen: Seen[] = [];
  streams: ReadableStreamDefaultController<Uint8Array>[] = [];
  /** Answers to messages POSTed to the session (default 202); a thrown error is a network failure. */
  onPost: (request: Seen) => Response | Promise<Response> = () => new Response(null, { status: 202 });
  onEvents: (request: Seen) => Response | null = () => null;
  opened: Record<string, unknown> = {
    session_id: "s1",
    token: "tok",
    events: "/rpc/ipc/s1/events",
    welcome: { t: "welcome", session_id: "s1", channels: { editor: "1.0.0" }, interfaces: {} },
    ping: { interval_ms: 60000, timeout_ms: 60000 },
    grace_ms: 2000,
    replay: { messages: 8, bytes: 1 << 22 },
  };

  install(): void {
    globalThis.fetch = async (input: RequestInfo | URL, init: RequestInit = {}) => {
      const request: Seen = {
        url: String(input),
        method: init.method ?? "GET",
        headers: new Headers(init.headers),
        body: init.body === undefined || init.body === null ? "" : String(init.body),
      };
      this.seen.push(request);
      if (request.url === "http://h:1/rpc/ipc") return Response.json(this.opened);
      if (request.url === "http://h:1/rpc/ipc/s1/events") {
        const answer = this.onEvents(request);
        if (answer !== null) return answer;
        const body = new ReadableStream<Uint8Array>({
          start: (controller) => {
            this.streams.push(controller);
            controller.enqueue(new TextEncoder().encode(": open\n\n"));
            // as fetch does: aborting errors the body
            init.signal?.addEventListener("abort", () => controller.error(init.signal?.reason));
          },
        });
        return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
      }
      if (request.method === "POST") return this.onPost(request);
      return new Response(null, { status: 204 });
    };
  }

  /** Writes to the newest event stream. */
  write(text: string): void {
    (this.streams.at(-1) as ReadableStreamDefaultController<Uint8Array>).enqueue(new TextEncoder().encode(text));
  }

  /** The POSTs to the session (acks left out unless `acks`). */
  posts(acks = false): Seen[] {
    return this.seen.filter(
      (r) => r.method === "POST" && r.url === "http://h:1/rpc/ipc/s1" && (acks || JSON.parse(r.body).t !== "ack"),
    );
  }

  gets(): Seen[] {
    return this.seen.filter((r) => r.url.endsWith("/events"));
  }
}

/** Waits for `condition`, at most 2 s (a bound, not a pause: it returns as soon as it holds). */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

interface Opened {
  pipe: MessagePipe;
  messages: Message[];
  states: ConnectionState[];
  closed: TetherError[];
}

async function open(backend: Backend): Promise<Opened> {
  backend.install();
  const { welcome, pipe } = await openHttpIpc("http://h:1/rpc", { t: "hello", protocol: 1, mode: "ipc" }, { authorization: "Bearer a" });
  assert.equal(welcome.session_id, "s1");
  const opened: Opened = { pipe, messages: [], states: [], closed: [] };
  pipe.onmessage = (m) => opened.messages.push(m);
  pipe.onstate = (s) => opened.states.push(s);
  pipe.onclose = (e) => opened.closed.push(e);
  return opened;
}

function event(id: number, message: unknown): string {
  return `id: ${id}\ndata: ${JSON.stringify(message)}\n\n`;
}

test("open: the hello POSTed; events in order with the token; a ping answered by a pong", async () => {
  const backend = new Backend();
  const { pipe, messages } = await open(backend);
  const hello = backend.seen[0] as Seen;
  assert.equal(hello.method, "POST");
  assert.equal(hello.headers.get("Content-Type"), "application/json");
  assert.equal(hello.headers.get("Authorization"), "Bearer a");
  assert.deepEqual(JSON.parse(hello.body), { t: "hello", protocol: 1, mode: "ipc" });
  await until(() => backend.streams.length === 1, "the event stream");
  const get = backend.gets()[0] as Seen;
  assert.equal(get.headers.get("X-Session-Token"), "tok");
  assert.equal(get.headers.get("X-Tether-Acks"), "1");
  assert.equal(get.headers.get("Last-Event-ID"), null);
  backend.write(event(1, { t: "notify", channel: "ev", method: "moved", args: ["e1"] }));
  backend.write('event: ping\ndata: {"t":"ping","id":7}\n\n' + event(2, { t: "result", id: 1, value: "AQ==" }).slice(0, 10));
  backend.write(event(2, { t: "result", id: 1, value: "AQ==" }).slice(10));
  await until(() => messages.length === 2 && backend.posts().length === 1, "two messages and a pong");
  assert.deepEqual(messages, [
    { t: "notify", channel: "ev", method: "moved", args: ["e1"] },
    { t: "result", id: 1, value: "AQ==" },
  ]);
  const pong = backend.posts()[0] as Seen;
  assert.deepEqual(JSON.parse(pong.body), { t: "pong", id: 7 });
  assert.equal(pong.headers.get("X-Tether-Seq"), null);
  assert.equal(pong.headers.get("X-Session-Token"), "tok");
  await pipe.close();
});

test("a refused hello is its typed error, with the status", async () => {
  const backend = new Backend();
  backend.install();
  globalThis.fetch = async () => Response.json({ error: { code: "too-many-requests", status: 429, message: "too many sessions" } }, { status: 429 });
  await assert.rejects(openHttpIpc("http://h:1/rpc", { t: "hello" }), (e: unknown) => e instanceof Unavailable && e.status === 429);
  globalThis.fetch = async () => Response.json({ hello: "world" });
  await assert.rejects(openHttpIpc("http://h:1/rpc", { t: "hello" }), (e: unknown) => e instanceof ConnectionClosed && /did not answer an IPC session/.test(e.message));
});

test("messages are POSTed one at a time, in order, numbered; one whose connection fails is sent again with its number", async () => {
  const backend = new Backend();
  let failures = 1;
  let inFlight = 0;
  let most = 0;
  backend.onPost = async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 1));
    inFlight--;
    if (failures-- > 0) throw new TypeError("fetch failed");
    return new Response(null, { status: 202 });
  };
  const { pipe } = await open(backend);
  await Promise.all([pipe.send({ t: "invoke", id: 1, data: new Uint8Array([1, 2]) }), pipe.send({ t: "notify", id: 2 }), pipe.send({ t: "cancel", id: 1 })]);
  const posts = backend.posts().map((r) => [r.headers.get("X-Tether-Seq"), JSON.parse(r.body).t]);
  assert.deepEqual(posts, [["1", "invoke"], ["1", "invoke"], ["2", "notify"], ["3", "cancel"]]);
  assert.deepEqual(JSON.parse((backend.posts()[0] as Seen).body).data, "AQI=");
  assert.equal(most, 1);
  await pipe.close();
});

test("acks: one for the newest event each quarter of the replay buffer, one in flight at a time", async () => {
  const backend = new Backend();
  const release: (() => void)[] = [];
  backend.onPost = (r) => {
    if (JSON.parse(r.body).t !== "ack") return new Response(null, { status: 202 });
    return new Promise((resolve) => release.push(() => resolve(new Response(null, { status: 202 }))));
  };
  const { pipe, messages } = await open(backend);
  await until(() => backend.streams.length === 1, "the event stream");
  backend.write(event(1, { t: "n" }));
  await until(() => messages.length === 1, "one event");
  assert.equal(backend.posts(true).length, 0);
  backend.write(event(2, { t: "n" }));
  await until(() => backend.posts(true).length === 1, "the first ack");
  assert.deepEqual(JSON.parse((backend.posts(true)[0] as Seen).body), { t: "ack", id: 2 });
  for (let id = 3; id <= 7; id++) backend.write(event(id, { t: "n" }));
  await until(() => messages.length === 7, "seven events");
  assert.equal(backend.posts(true).length, 1, "no second ack while the first is in flight");
  (release.shift() as () => void)();
  await until(() => backend.posts(true).length === 2, "the next ack");
  assert.deepEqual(JSON.parse((backend.posts(true)[1] as Seen).body), { t: "ack", id: 6 });
  (release.shift() as () => void)();
  await pipe.close();
});

test("a dropped stream is resumed with Last-Event-ID; messages sent meanwhile wait; nothing is lost", async () => {
  const backend = new Backend();
  const { pipe, messages, states } = await open(backend);
  await until(() => backend.streams.length === 1, "the event stream");
  backend.write(event(1, { t: "a" }) + event(2, { t: "b" }));
  await until(() => messages.length === 2, "two events");
  let resumeNow: (() => void) | null = null;
  backend.onEvents = () => null;
  const held = new Promise<void>((resolve) => (resumeNow = resolve));
  const original = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    if (String(input).endsWith("/events")) await held;
    return original(input, init);
  };
  (backend.streams[0] as ReadableStreamDefaultController<Uint8Array>).close(); // ends without `event: close`
  await until(() => states.includes("reconnecting"), "reconnecting");
  let streamsWhenPosted = -1;
  backend.onPost = () => {
    streamsWhenPosted = backend.streams.length;
    return new Response(null, { status: 202 });
  };
  const sent = pipe.send({ t: "invoke", id: 9 });
  (resumeNow as unknown as () => void)();
  await until(() => backend.streams.length === 2, "the resumed stream");
  await sent;
  assert.equal(streamsWhenPosted, 2, "a message sent while resuming waits for the resumed stream");
  assert.deepEqual(states, ["reconnecting", "connected"]);
  const resumed = backend.gets()[1] as Seen;
  assert.equal(resumed.headers.get("Last-Event-ID"), "2");
  assert.equal(resumed.headers.get("X-Session-Token"), "tok");
  backend.write(event(3, { t: "c" }));
  await until(() => messages.length === 3, "the event after the resume");
  assert.deepEqual(messages.map((m) => m.t), ["a", "b", "c"]);
  await pipe.close();
});

test("a stream silent past the ping bound is taken as broken and resumed", async () => {
  const backend = new Backend();
  backend.opened["ping"] = { interval_ms: 15, timeout_ms: 15 };
  const { pipe, states } = await open(backend);
  await until(() => backend.streams.length === 2, "a second stream after the silence");
  assert.deepEqual(states.slice(0, 2), ["reconnecting", "connected"]);
  assert.equal((backend.gets()[1] as Seen).headers.get("Last-Event-ID"), "0");
  await pipe.close();
});

test("resuming a session the backend no longer has ends the pipe with why", async () => {
  const backend = new Backend();
  const { closed, states } = await open(backend);
  await until(() => backend.streams.length === 1, "the event stream");
  backend.onEvents = () => Response.json({ error: { code: "not-found", status: 404, message: "no session" } }, { status: 404 });
  (backend.streams[0] as ReadableStreamDefaultController<Uint8Array>).error(new TypeError("network error"));
  await until(() => closed.length === 1, "the end");
  assert.ok(closed[0] instanceof ConnectionClosed);
  assert.match(closed[0].message, /no longer has the session/);
  assert.equal(states.at(-1), "closed");
});

test("`event: close` ends the pipe with the backend's reason; sends then reject", async () => {
  const backend = new Backend();
  const { pipe, closed } = await open(backend);
  await until(() => backend.streams.length === 1, "the event stream");
  backend.write('event: close\ndata: {"reason": "frontend too slow"}\n\n');
  await until(() => closed.length === 1, "the close");
  assert.equal(closed[0]?.message, "frontend too slow");
  await assert.rejects(pipe.send({ t: "notify" }), ConnectionClosed);
  assert.equal(backend.gets().length, 1, "no resume after event: close");
});

test("close() DELETEs the session with its token, once", async () => {
  const backend = new Backend();
  const { pipe, closed } = await open(backend);
  await pipe.close("done here");
  await pipe.close();
  const deletes = backend.seen.filter((r) => r.method === "DELETE");
  assert.equal(deletes.length, 1);
  assert.equal(deletes[0]?.url, "http://h:1/rpc/ipc/s1");
  assert.equal(deletes[0]?.headers.get("X-Session-Token"), "tok");
  assert.equal(closed[0]?.message, "done here");
});

test("events that come before the session listens are handed to it first, in order", async () => {
  const backend = new Backend();
  backend.install();
  const { pipe } = await openHttpIpc("http://h:1/rpc", { t: "hello" });
  await until(() => backend.streams.length === 1, "the event stream");
  backend.write(event(1, { t: "a" }) + event(2, { t: "b" }));
  const sizes: number[] = [];
  const messages: Message[] = [];
  // the ack of event 2 (every 2 events here) says both were taken, with no listener yet
  await until(() => backend.posts(true).length === 1, "the ack of the first two events");
  pipe.onmessage = (m, size) => {
    messages.push(m);
    sizes.push(size ?? -1);
  };
  backend.write(event(3, { t: "c" }));
  await until(() => messages.length === 3, "three messages");
  assert.deepEqual(messages.map((m) => m.t), ["a", "b", "c"]);
  assert.deepEqual(sizes, [9, 9, 9]);
  await pipe.close();
});
