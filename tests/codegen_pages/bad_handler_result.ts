import { session } from "./client.js";
import { EditorPrompts } from "./ipc_editor.js";

export function page(): void {
  session.serve(EditorPrompts, {
    confirm: async (question) => `yes, ${question}`, // expect TS2322
  });
}
