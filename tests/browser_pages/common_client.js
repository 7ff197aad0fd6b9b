// What tests/browser_pages/http_client.html and ws_client.html share: tether's
// browser client on `window.tether`, and on `window.refs` the refs of the
// interfaces tests/browser_scenarios.py serves (what `tether codegen
// typescript` emits, written out here). Each page adds its URL, then `ready`.
import * as tether from "/client/index.js";

export const refs = {
  RobotWorldRead: {
    kind: "rpc", name: "RobotWorldReadRpcInterface", version: "1.0.0",
    operations: {
      countRobots: { name: "count_robots", params: ["imodel"] },
      queryObstaclesHitByRobot: { name: "query_obstacles_hit_by_robot", params: ["imodel", "robot_id"] },
    },
  },
  RobotTelemetry: {
    kind: "rpc", name: "RobotTelemetryRpcInterface", version: "1.0.0",
    operations: {
      watch: { name: "watch", params: ["imodel", "robot_id", "every"], stream: "server" },
      snapshot: { name: "snapshot", params: ["imodel"], result: "bytes" },
    },
  },
  Waiter: {
    kind: "rpc", name: "WaiterRpcInterface", version: "1.0.0",
    operations: {
      wait: { name: "wait", params: ["tag"] },
      whoAmI: { name: "who_am_i", params: [] },
      echoBytes: { name: "echo_bytes", params: ["data"], result: "bytes" },
      total: { name: "total", params: ["numbers"], stream: "client", streamParam: 0 },
      halfway: { name: "halfway", params: [] },
    },
  },
  EditorIpc: {
    kind: "ipc", channel: "ipc-editor", version: "1.0.0",
    methods: {
      openDocument: { name: "open_document", params: ["name"] },
      addElement: { name: "add_element", params: ["kind", "x", "y"] },
      moveElement: { name: "move_element", params: ["element_id", "dx", "dy"] },
      deleteElement: { name: "delete_element", params: ["element_id"] },
      validateAll: { name: "validate_all", params: [] },
    },
  },
  EditorEvents: {
    kind: "notification", channel: "ipc-editor-events", version: "1.0.0",
    methods: {
      elementChanged: { name: "element_changed", params: ["change"] },
      progress: { name: "progress", params: ["task", "done", "total"] },
    },
  },
  EditorPrompts: {
    kind: "ipc", channel: "ipc-editor-prompts", version: "1.0.0",
    methods: { confirm: { name: "confirm", params: ["question"] } },
  },
};

window.tether = tether;
window.refs = refs;
