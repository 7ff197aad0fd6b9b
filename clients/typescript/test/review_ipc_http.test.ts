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
    pipe.onstate = (state) => states.push(state);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.notDeepEqual(states, [], "still `connected` after 10 ping bounds and 3 grace periods with no answer: calls wait forever");
    void pipe.close().catch(() => {}); // its DELETE is not answered either
  } finally {
    globalThis.fetch = realFetch;
  }
});
