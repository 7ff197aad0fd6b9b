import { rpc } from "./client.js";
import { RobotTelemetry } from "./robot_world.js";

export async function page(): Promise<string> {
  const text: string = await rpc.proxy(RobotTelemetry).snapshot({ key: "m1" }); // expect TS2322
  return text;
}
