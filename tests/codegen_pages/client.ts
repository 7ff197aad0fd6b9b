// A connected RPC client and IPC session (docs/browser.md), declared only:
// the pages are type-checked against the real client's types, never run.
import type { IpcSession, RpcClient } from "tether-client";

export declare const rpc: RpcClient;
export declare const session: IpcSession;
