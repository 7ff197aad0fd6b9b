import { rpcProxy } from "./client.js";
import { RobotWorldRead } from "./robot_world.js";

export async function page(): Promise<string[]> {
  return rpcProxy(RobotWorldRead).queryObstaclesHitByRobot({ key: "m1" }); // expect TS2554
}
