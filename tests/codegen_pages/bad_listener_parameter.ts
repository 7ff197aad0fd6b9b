import { session } from "./client.js";
import { EditorEvents } from "./ipc_editor.js";

export function page(): void {
  session.listen(EditorEvents, {
    progress(task: number) { // expect TS2322
      console.log(task);
    },
  });
}
