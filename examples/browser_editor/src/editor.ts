/**
 * The browser editor's page: the IPC editor's frontend, in a browser tab.
 *
 * It opens an IPC session with the backend that serves this page
 * (`connectIpc`, over WebSocket, or over HTTP with `?transport=http`), opens
 * a document, and edits it with the buttons. The backend's notifications
 * (`EditorEvents`) update the document and fill the list of events; its
 * questions (`EditorPrompts.confirm`) open the page's dialog. The page says
 * what it is doing in `document.body.dataset.state` ("connecting", "ready",
 * "busy", "closed", "failed"), which the tests wait on.
 */

import { connectIpc, isApplicationError, TetherError } from "tether-client";
import type { ConnectionState } from "tether-client";

import { EditorEvents, EditorIpc, EditorPrompts, ElementNotFound } from "./editor_stubs.js";
import type { DocumentInfo, Element, ElementChange } from "./editor_stubs.js";

const APPLICATION = { id: "browser-editor", version: "1.0.0" };

function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}: index.html and editor.ts disagree`);
  return found as T;
}

const ui = {
  transport: byId<HTMLElement>("transport"),
  connection: byId<HTMLElement>("connection"),
  documentName: byId<HTMLElement>("document-name"),
  revision: byId<HTMLElement>("revision"),
  elements: byId<HTMLUListElement>("elements"),
  kind: byId<HTMLInputElement>("kind"),
  elementId: byId<HTMLInputElement>("element-id"),
  add: byId<HTMLButtonElement>("add"),
  move: byId<HTMLButtonElement>("move"),
  remove: byId<HTMLButtonElement>("delete"),
  validate: byId<HTMLButtonElement>("validate"),
  result: byId<HTMLElement>("result"),
  error: byId<HTMLElement>("error"),
  events: byId<HTMLOListElement>("events"),
  dialog: byId<HTMLDialogElement>("confirm"),
  question: byId<HTMLElement>("question"),
  yes: byId<HTMLButtonElement>("confirm-yes"),
  no: byId<HTMLButtonElement>("confirm-no"),
};

/** What the page knows of the open document: element ids, and each one's latest state. */
const elements = new Map<string, Element | null>();
let revision = 0;

function setState(state: string): void {
  document.body.dataset["state"] = state;
}

function where(element: Element): string {
  return `(${element.placement.x}, ${element.placement.y})`;
}

function render(): void {
  ui.revision.textContent = String(revision);
  ui.elements.replaceChildren(
    ...[...elements.keys()].sort().map((id) => {
      const item = document.createElement("li");
      const known = elements.get(id);
      item.textContent = known ? `${id}: ${known.kind} at ${where(known)}` : id;
      item.dataset["id"] = id;
      item.addEventListener("click", () => {
        ui.elementId.value = id;
      });
      return item;
    }),
  );
}

function showDocument(info: DocumentInfo): void {
  ui.documentName.textContent = info.name;
  revision = info.revision;
  elements.clear();
  for (const id of info.element_ids) elements.set(id, null);
  render();
}

function showError(error: unknown): void {
  if (isApplicationError(error, ElementNotFound)) {
    // The backend's own error, by the name it registered: point at the stale id.
    ui.elementId.select();
  }
  if (isApplicationError(error)) {
    ui.error.textContent = `${error.name}: ${error.message}`;
  } else if (error instanceof TetherError) {
    ui.error.textContent = `${error.name} (${error.code}): ${error.message}`;
  } else {
    ui.error.textContent = String(error);
  }
}

/** Run one user action: disable the buttons, show its answer or its error. */
async function action(run: () => Promise<string>): Promise<void> {
  setState("busy");
  ui.error.textContent = "";
  const buttons = [ui.add, ui.move, ui.remove, ui.validate];
  for (const button of buttons) button.disabled = true;
  try {
    ui.result.textContent = await run();
  } catch (error) {
    ui.result.textContent = "";
    showError(error);
  } finally {
    for (const button of buttons) button.disabled = false;
    if (document.body.dataset["state"] === "busy") setState("ready");
  }
}

/**
 * The backend's question, answered with the page's dialog (not `window.confirm`).
 * The dialog closes by itself when the backend gives up asking (`signal`).
 */
function ask(question: string, signal: AbortSignal): Promise<boolean> {
  ui.question.textContent = question;
  return new Promise<boolean>((resolve, reject) => {
    const done = () => {
      ui.yes.onclick = ui.no.onclick = null;
      signal.removeEventListener("abort", abandoned);
      ui.dialog.close();
    };
    const abandoned = () => {
      done();
      reject(signal.reason);
    };
    const answer = (value: boolean) => () => {
      done();
      resolve(value);
    };
    ui.yes.onclick = answer(true);
    ui.no.onclick = answer(false);
    signal.addEventListener("abort", abandoned);
    ui.dialog.showModal();
  });
}

function onChange(change: ElementChange): void {
  revision = change.revision;
  const { element } = change;
  if (change.kind === "deleted") elements.delete(element.id);
  else elements.set(element.id, element);
  render();
  const item = document.createElement("li");
  item.textContent = `r${change.revision} ${change.kind} ${element.id} ${where(element)}`;
  ui.events.append(item);
}

async function main(): Promise<void> {
  setState("connecting");
  const params = new URLSearchParams(location.search);
  const transport = params.get("transport") ?? "ws";
  // How long the user has to answer "delete?": the delete call's deadline, which the
  // backend's question to the page (a call inside that call) inherits.
  const answerWithinMs = Number(params.get("answerWithinMs") ?? 60_000);
  if (!(answerWithinMs > 0)) {
    throw new Error(`?answerWithinMs= takes a number of milliseconds above 0, not ${params.get("answerWithinMs")}`);
  }
  if (transport !== "ws" && transport !== "http") {
    throw new Error(`?transport= takes "ws" or "http", not ${JSON.stringify(transport)}`);
  }
  // The backend serves this page, so the session goes to the same origin: no CORS.
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = transport === "ws" ? `${scheme}//${location.host}/rpc/ws` : `${location.origin}/rpc`;
  ui.transport.textContent = transport === "ws" ? "WebSocket" : "HTTP";

  const session = await connectIpc(url, { channels: [EditorIpc], application: APPLICATION });
  const showState = (state: ConnectionState) => {
    ui.connection.textContent = state;
    if (state === "closed") setState("closed");
  };
  showState(session.state);
  session.onstatechange = showState;
  session.listen(EditorEvents, {
    elementChanged: onChange,
    progress(task, done, total) {
      const item = document.createElement("li");
      item.textContent = `${task}: ${done} of ${total}`;
      ui.events.append(item);
    },
  });
  session.serve(EditorPrompts, { confirm: (question, context) => ask(question, context.signal) });
  void session.closed.then((why) => {
    ui.error.textContent = `session closed: ${why.message}`;
  });

  const editor = session.proxy(EditorIpc);
  showDocument(await editor.openDocument("plan.dgn"));

  ui.add.onclick = () =>
    action(async () => {
      const x = Math.round(Math.random() * 90);
      const element = await editor.addElement(ui.kind.value || "door", x, 10);
      ui.elementId.value = element.id;
      return `added ${element.id} at ${where(element)}`;
    });
  ui.move.onclick = () =>
    action(async () => {
      const id = ui.elementId.value;
      const placement = await editor.moveElement(id, 10, 0);
      return `moved ${id} to (${placement.x}, ${placement.y})`;
    });
  ui.remove.onclick = () =>
    action(async () => {
      const id = ui.elementId.value;
      const deleted = await editor.deleteElement(id, { timeoutMs: answerWithinMs });
      return deleted ? `deleted ${id}` : `kept ${id}`;
    });
  ui.validate.onclick = () =>
    action(async () => {
      // Progress comes as `progress` notifications while the call runs; 30 s at most.
      const problems = await editor.validateAll({ timeoutMs: 30_000 });
      return `validated: ${problems} problem(s)`;
    });
  setState("ready");
}

main().catch((error: unknown) => {
  showError(error);
  setState("failed");
});
