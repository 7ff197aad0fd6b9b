import type { ChangeKind } from "./ipc_editor.js";

export const kind: ChangeKind = "renamed"; // expect TS2322
