import { serve } from "./client.js";
import { EditorPrompts } from "./ipc_editor.js";

export function page(): void {
  serve(EditorPrompts, {
    confirm: async (question) => `yes, ${question}`, // expect TS2322
  });
}
