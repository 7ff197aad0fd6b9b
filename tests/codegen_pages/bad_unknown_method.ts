import { rpc } from "./client.js";
import { RobotWorldRead } from "./robot_world.js";

export async function page(): Promise<unknown> {
  return rpc.proxy(RobotWorldRead).fly({ key: "m1" }); // expect TS2339
}
