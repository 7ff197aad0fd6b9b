import { ipcProxy } from "./client.js";
import { EditorIpc } from "./ipc_editor.js";

export async function page(): Promise<string> {
  const info = await ipcProxy(EditorIpc).openDocument("plan");
  return info.title; // expect TS2339
}
