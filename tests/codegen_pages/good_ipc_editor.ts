// A page using the stubs of examples/ipc_editor/interface.py as intended.
import { isApplicationError } from "tether-client";
import { ipcProxy, listen, serve } from "./client.js";
import {
  ChangeKind,
  EditorEvents,
  EditorIpc,
  EditorPrompts,
  ElementNotFound,
  type DocumentInfo,
  type ElementChange,
  type ElementNotFoundDetails,
  type Placement,
} from "./ipc_editor.js";

export async function page(signal: AbortSignal): Promise<string[]> {
  const lines: string[] = [];
  serve(EditorPrompts, { confirm: async (question) => question.length > 0 });
  serve(EditorPrompts, { confirm: (question) => question === "yes" });
  const stop = listen(EditorEvents, {
    elementChanged(change: ElementChange) {
      if (change.kind === ChangeKind.MOVED || change.kind === "added") {
        lines.push(`${change.revision} ${change.element.id} ${change.element.placement.x}`);
      }
    },
  });
  listen(EditorEvents, {});
  listen(EditorEvents, { progress: (task, done, total) => lines.push(`${task} ${done}/${total}`) });
  const editor = ipcProxy(EditorIpc);
  const info: DocumentInfo = await editor.openDocument("plan", { signal });
  lines.push(info.name, String(info.revision), ...info.element_ids);
  const added = await editor.addElement("wall", 1, 2);
  try {
    const placement: Placement = await editor.moveElement(added.id, 0.5, -0.5, { timeoutMs: 1000 });
    lines.push(`${placement.x},${placement.y}`);
  } catch (e) {
    if (!isApplicationError(e, ElementNotFound)) throw e;
    lines.push((e.details as unknown as ElementNotFoundDetails).fields.element_id);
  }
  const deleted: boolean = await editor.deleteElement(added.id);
  const problems: number = await editor.validateAll({ signal });
  lines.push(String(deleted), String(problems), (await editor.saveDocument()).name);
  lines.push(EditorIpc.channel, EditorIpc.version, EditorEvents.channel, ChangeKind.DELETED);
  stop();
  return lines;
}
