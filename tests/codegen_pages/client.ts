// The calls a page makes on a connected client (docs/browser.md), declared
// only: the pages are type-checked, never run.
import type { IpcChannelRef, NotificationRef, RpcInterfaceRef } from "tether-client";

export declare function rpcProxy<T>(ref: RpcInterfaceRef<T>): T;
export declare function ipcProxy<T, H>(ref: IpcChannelRef<T, H>): T;
export declare function serve<T, H>(ref: IpcChannelRef<T, H>, handler: H): void;
export declare function listen<L>(ref: NotificationRef<L>, listener: L): () => void;
