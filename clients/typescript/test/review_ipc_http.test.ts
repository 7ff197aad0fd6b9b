/** Review: HTTP IPC against a backend that never answers (fails on 8d9d405). */
import assert from "node:assert/strict";
import { test } from "node:test";

import { HttpIpcPipe } from "../src/ipc_http.js";
import type { ConnectionState } from "../src/transport.js";

const OPENED = {
  session_id: "s",
  token: "t",
  events: "ipc/s/events",
  welcome: { session_id: "s", channels: {}, interfaces: {} },
  ping: { interval_ms: 50, timeout_ms: 50 },
  grace_ms: 300,
};

test("review: an event stream whose GET is never answered is given up on (the ping bound, the grace period)", async () => {
  const realFetch = globalThis.fetch;
  // the backend (or a proxy) accepts the request and never answers it; aborting rejects, as fetch does
  globalThis.fetch = (_input: RequestInfo | URL, init: RequestInit = {}) =>
    new Promise<Response>((_resolve, reject) => init.signal?.addEventListener("abort", () => reject(init.signal?.reason)));
  try {
    const pipe = new HttpIpcPipe("http://x/rpc", OPENED, { attempts: 3, firstDelayMs: 10, maxDelayMs: 10 });
    const states: ConnectionState[] = [];
    const changed = new Promise<void>((resolve) => {
      pipe.onstate = (state) => {
        states.push(state);
        resolve();
      };
    });
    let cap: ReturnType<typeof setTimeout> | undefined;
    const capped = new Promise<void>((resolve) => {
      cap = setTimeout(resolve, 2000); // 20 ping bounds: a bound on the test, not a wait for the event
    });
    await Promise.race([changed, capped]);
    clearTimeout(cap);
    assert.notDeepEqual(states, [], "still `connected` after 20 ping bounds with no answer: calls wait forever");
    void pipe.close().catch(() => {}); // its DELETE is not answered either
  } finally {
    globalThis.fetch = realFetch;
  }
});

test("an event id that is not a message number ends the session with why (no NaN ack)", async () => {
  const realFetch = globalThis.fetch;
  const posted: string[] = [];
  globalThis.fetch = async (_input: RequestInfo | URL, init: RequestInit = {}) => {
    if (init.method === "POST") {
      posted.push(String(init.body));
      return new Response(null, { status: 202 });
    }
    if (init.method === "DELETE") return new Response(null, { status: 204 });
    const body = 'id: abc\ndata: {"t":"notify","channel":"c","method":"m","args":[]}\n\n';
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  };
  try {
    const pipe = new HttpIpcPipe("http://x/rpc", { ...OPENED, ping: null, replay: { messages: 4, bytes: 4096 } }, { attempts: 1, firstDelayMs: 1, maxDelayMs: 1 });
    const closed = new Promise<Error>((resolve) => {
      pipe.onclose = resolve;
    });
    pipe.onmessage = () => assert.fail("a message under a bad id was taken");
    const why = await closed;
    assert.match(why.message, /event id that is not a message number: abc/);
    assert.ok(posted.every((body) => !body.includes("NaN")), posted.join(" | "));
  } finally {
    globalThis.fetch = realFetch;
  }
});
