import { session } from "./client.js";
import { EditorIpc } from "./ipc_editor.js";

export async function page(): Promise<string> {
  const info = await session.proxy(EditorIpc).openDocument("plan");
  return info.title; // expect TS2339
}
