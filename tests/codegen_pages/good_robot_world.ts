// A page using the stubs of examples/robot_world/interface.py as intended.
import { connectRpc, isApplicationError } from "tether-client";
import type { CallOptions } from "tether-client";
import { rpc } from "./client.js";
import {
  IModelNotFound,
  RobotNotFound,
  RobotTelemetry,
  RobotWorldRead,
  type IModelProps,
  type Position,
  type RobotNotFoundDetails,
} from "./robot_world.js";

export async function page(signal: AbortSignal): Promise<string[]> {
  const robots = rpc.proxy(RobotWorldRead);
  const imodel: IModelProps = { key: "m1" };
  const options: CallOptions = { signal, timeoutMs: 5000, activityId: "a1", metadata: { k: "v" } };
  const count: number = await robots.countRobots(imodel, options);
  const inArray: number = await robots.countRobotsInArray(imodel, ["r1", "r2"]);
  const lines = [`${count + inArray}`];
  try {
    const hit: string[] = await robots.queryObstaclesHitByRobot(imodel, "r1");
    lines.push(...hit);
  } catch (e) {
    if (isApplicationError(e, RobotNotFound)) {
      const details: RobotNotFoundDetails = e.details;
      lines.push(details.fields.robot_id, details.fields.imodel_key);
    } else if (isApplicationError(e, IModelNotFound)) {
      lines.push("no such iModel");
    } else {
      throw e;
    }
  }
  const telemetry = rpc.proxy(RobotTelemetry);
  for await (const position of telemetry.watch(imodel, "r1", 0.5, { signal })) {
    const p: Position = position;
    lines.push(`${p.robot_id} ${p.step} ${p.x} ${p.y}`);
    break;
  }
  const image: Uint8Array = await telemetry.snapshot(imodel);
  lines.push(String(image.byteLength));
  const spec = RobotWorldRead.operations["countRobots"];
  lines.push(RobotWorldRead.kind, RobotWorldRead.name, RobotWorldRead.version, spec?.name ?? "");
  return lines;
}

export async function connect(url: string): Promise<number> {
  const client = await connectRpc(url, {
    interfaces: [RobotWorldRead, RobotTelemetry],
    application: { id: "robots", version: "1.0.0" },
  });
  const count = await client.proxy(RobotWorldRead).countRobots({ key: "m1" });
  await client.close();
  return count;
}
