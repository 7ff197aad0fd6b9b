import { rpcProxy } from "./client.js";
import { ConformanceStreams } from "./streams.js";

export async function page(): Promise<number> {
  return rpcProxy(ConformanceStreams).total("k", ["one", "two"]); // expect TS2345
}
