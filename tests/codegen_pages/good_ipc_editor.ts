// A page using the stubs of examples/ipc_editor/interface.py as intended.
import { connectIpc, isApplicationError } from "tether-client";
import { session } from "./client.js";
import {
  ChangeKind,
  EditorEvents,
  EditorIpc,
  EditorPrompts,
  ElementNotFound,
  type DocumentInfo,
  type ElementChange,
  type Placement,
} from "./ipc_editor.js";

export async function page(signal: AbortSignal): Promise<string[]> {
  const lines: string[] = [];
  session.serve(EditorPrompts, { confirm: async (question) => question.length > 0 });
  session.serve(EditorPrompts, { confirm: (question) => question === "yes" });
  session.serve(EditorPrompts, {
    async confirm(question, context) {
      context.signal.throwIfAborted();
      return question.length > 0 && context.activityId !== null;
    },
  });
  const stop = session.listen(EditorEvents, {
    elementChanged(change: ElementChange) {
      if (change.kind === ChangeKind.MOVED || change.kind === "added") {
        lines.push(`${change.revision} ${change.element.id} ${change.element.placement.x}`);
      }
    },
  });
  session.listen(EditorEvents, {});
  session.listen(EditorEvents, { progress: (task, done, total) => lines.push(`${task} ${done}/${total}`) });
  const editor = session.proxy(EditorIpc);
  const info: DocumentInfo = await editor.openDocument("plan", { signal });
  lines.push(info.name, String(info.revision), ...info.element_ids);
  const added = await editor.addElement("wall", 1, 2);
  try {
    const placement: Placement = await editor.moveElement(added.id, 0.5, -0.5, { timeoutMs: 1000 });
    lines.push(`${placement.x},${placement.y}`);
  } catch (e) {
    if (!isApplicationError(e, ElementNotFound)) throw e;
    lines.push(e.details.fields.element_id); // typed by the generated ErrorName
  }
  const deleted: boolean = await editor.deleteElement(added.id);
  const problems: number = await editor.validateAll({ signal });
  lines.push(String(deleted), String(problems), (await editor.saveDocument()).name);
  lines.push(EditorIpc.channel, EditorIpc.version, EditorEvents.channel, ChangeKind.DELETED);
  stop();
  return lines;
}

export async function connect(url: string): Promise<string> {
  const editorSession = await connectIpc(url, {
    channels: [EditorIpc, EditorPrompts],
    application: { id: "editor", version: "1.0.0" },
  });
  const stop = editorSession.serve(EditorPrompts, { confirm: () => true });
  const info = await editorSession.proxy(EditorIpc).openDocument("plan");
  stop();
  await editorSession.close();
  return info.name;
}
