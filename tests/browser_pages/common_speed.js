// The cost of an RPC call over WebSocket with tether's client, against a
// hand-written client (hello, then call messages) on the same `/rpc/ws` route
// and the same impl, in one page and one run: N sequential round trips each,
// interleaved in blocks (the order alternating), after a warm-up.
// tests/test_browser_speed.py and bench/browser.py run it.
import { connectRpc } from "/client/index.js";

const Echo = {
  kind: "rpc",
  name: "bench.BrowserEcho",
  version: "1.0.0",
  operations: { echo: { name: "echo", params: ["value"] } },
};

// The hand-written client: one socket, one call at a time, answers pings.
function openRaw(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    let waiting = null;
    let nextId = 1;
    socket.onerror = () => {};
    socket.onclose = (event) => {
      const error = new Error(`the hand-written client's socket closed (${event.code})`);
      if (waiting !== null) waiting.reject(error);
      reject(error);
    };
    socket.onopen = () => socket.send(JSON.stringify({ t: "hello", protocol: 1, mode: "rpc" }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.t === "ping") {
        socket.send(JSON.stringify({ t: "pong", id: message.id }));
      } else if (message.t === "welcome") {
        resolve({
          call(value) {
            const id = nextId++;
            return new Promise((ok, fail) => {
              waiting = { id, resolve: ok, reject: fail };
              socket.send(JSON.stringify({
                t: "call", id, iface: Echo.name, ver: Echo.version, op: "echo", args: [value], ctx: { activity_id: `raw-${id}` },
              }));
            });
          },
          close() {
            socket.onclose = null;
            socket.close(1000);
          },
        });
      } else if (waiting !== null && message.id === waiting.id) {
        const { resolve: ok, reject: fail } = waiting;
        waiting = null;
        if (message.t === "result") ok(message.value);
        else fail(new Error(`the hand-written call failed: ${JSON.stringify(message)}`));
      }
    };
  });
}

async function rounds(call, count, first) {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const value = first + i;
    const got = await call(value);
    if (got !== value) throw new Error(`echo(${value}) answered ${JSON.stringify(got)}`);
  }
  return performance.now() - start;
}

/**
 * `n` round trips of each client against `wsUrl`, in blocks of `block`; the
 * milliseconds each took in all, and tether's time over the hand-written one.
 */
export async function measure(wsUrl, n, block) {
  const raw = await openRaw(wsUrl);
  const client = await connectRpc(wsUrl, { interfaces: [Echo] });
  const echo = client.proxy(Echo);
  const viaRaw = (value) => raw.call(value);
  const viaTether = (value) => echo.echo(value);
  try {
    await rounds(viaRaw, block, 0); // warm-up
    await rounds(viaTether, block, 0);
    let rawMs = 0;
    let tetherMs = 0;
    const pairs = []; // tether's time over the hand-written one, block by block
    for (let done = 0, turn = 0; done < n; done += block, turn++) {
      const count = Math.min(block, n - done);
      let rawBlock;
      let tetherBlock;
      if (turn % 2 === 0) {
        rawBlock = await rounds(viaRaw, count, done);
        tetherBlock = await rounds(viaTether, count, done);
      } else {
        tetherBlock = await rounds(viaTether, count, done);
        rawBlock = await rounds(viaRaw, count, done);
      }
      rawMs += rawBlock;
      tetherMs += tetherBlock;
      if (rawBlock > 0) pairs.push(tetherBlock / rawBlock);
    }
    pairs.sort((a, b) => a - b);
    return {
      n,
      rawMs,
      tetherMs,
      rawUsPerCall: (rawMs * 1000) / n,
      tetherUsPerCall: (tetherMs * 1000) / n,
      ratio: tetherMs / rawMs,
      // Robust to a busy machine: a spike slows one block, not the median pair.
      medianBlockRatio: pairs.length > 0 ? pairs[Math.floor(pairs.length / 2)] : null,
    };
  } finally {
    raw.close();
    await client.close();
  }
}
