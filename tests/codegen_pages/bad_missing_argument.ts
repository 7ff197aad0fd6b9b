import { rpc } from "./client.js";
import { RobotWorldRead } from "./robot_world.js";

export async function page(): Promise<string[]> {
  return rpc.proxy(RobotWorldRead).queryObstaclesHitByRobot({ key: "m1" }); // expect TS2554
}
