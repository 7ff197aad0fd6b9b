/** RPC over HTTP: one fetch per call (owned by the http helper; this is the seam's signature). */

import { ConnectionClosed } from "./errors.js";
import type { ConnectOptions, RpcTransport } from "./transport.js";

/** Connects to the HTTP server whose RPC prefix is `url` (`http://host:port/rpc`), reading what it serves. */
export async function connectHttpRpc(url: string, options: ConnectOptions = {}): Promise<RpcTransport> {
  void options;
  throw new ConnectionClosed(`RPC over HTTP is not written yet (${url})`);
}
