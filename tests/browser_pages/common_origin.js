// Every way a page can reach a backend of another origin: tether's client
// (RPC and IPC, over WebSocket and HTTP) and by hand (fetch, WebSocket).
// tests/test_browser_origin.py runs it from an origin the backend does not
// allow (each attempt fails, nothing runs) and from one it does (each works).
import { connectIpc, connectRpc, TetherError } from "/client/index.js";

const Counter = {
  kind: "rpc",
  name: "test.OriginCounter",
  version: "1.0.0",
  operations: { bump: { name: "bump", params: [] } },
};
const Tally = {
  kind: "ipc",
  channel: "test.origin_tally",
  version: "1.0.0",
  methods: { bump: { name: "bump", params: [] } },
};
const CALL = "/test.OriginCounter/1.0.0/bump";

function failure(error) {
  return {
    ok: false,
    tether: error instanceof TetherError,
    name: error?.name ?? typeof error,
    code: error?.code ?? null,
    message: String(error?.message ?? error),
  };
}

async function attempt(run) {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    return failure(error);
  }
}

async function rpc(url) {
  const client = await connectRpc(url, { interfaces: [Counter], signal: AbortSignal.timeout(5000) });
  try {
    return await client.proxy(Counter).bump({ timeoutMs: 5000 });
  } finally {
    await client.close();
  }
}

async function ipc(url) {
  const session = await connectIpc(url, { channels: [Tally], signal: AbortSignal.timeout(5000) });
  try {
    return await session.proxy(Tally).bump({ timeoutMs: 5000 });
  } finally {
    await session.close();
  }
}

async function post(url, type, body) {
  const answer = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body });
  return { status: answer.status, body: await answer.text() };
}

// A hello and one call written by hand, as any WebSocket client would.
function rawWebSocket(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("no answer within 5 s"));
    }, 5000);
    socket.onopen = () => {
      socket.send(JSON.stringify({ t: "hello", protocol: 1, mode: "rpc" }));
      socket.send(JSON.stringify({ t: "call", id: 1, iface: Counter.name, ver: "1.0.0", op: "bump", args: [], ctx: { activity_id: "raw-1" } }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.t === "ping") socket.send(JSON.stringify({ t: "pong", id: message.id }));
      if (message.t === "result" || message.t === "error") {
        clearTimeout(timer);
        socket.close();
        if (message.t === "result") resolve(message.value);
        else reject(new Error(`error ${message.error.code}: ${message.error.message}`));
      }
    };
    socket.onclose = (event) => {
      clearTimeout(timer);
      reject(new Error(`closed ${event.code} before an answer`));
    };
  });
}

/** Tries each way in turn against `backend` (`http://host:port`); what each got. */
export async function tryAll(backend) {
  const ws = backend.replace(/^http/, "ws") + "/rpc/ws";
  const prefix = `${backend}/rpc`;
  const hello = JSON.stringify({ t: "hello", protocol: 1, mode: "ipc", channels: { [Tally.channel]: Tally.version } });
  return {
    rpcWebSocket: await attempt(() => rpc(ws)),
    rpcHttp: await attempt(() => rpc(prefix)),
    ipcWebSocket: await attempt(() => ipc(ws)),
    ipcHttp: await attempt(() => ipc(prefix)),
    fetchJson: await attempt(() => post(prefix + CALL, "application/json", "[]")),
    fetchSimple: await attempt(() => post(prefix + CALL, "text/plain", "[]")),
    fetchIpc: await attempt(() => post(`${prefix}/ipc`, "application/json", hello)),
    rawWebSocket: await attempt(() => rawWebSocket(ws)),
  };
}
